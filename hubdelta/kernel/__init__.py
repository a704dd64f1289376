"""The ground floor: settings, errors, logging and the version. Imports no stage (enforced by lint-imports)."""
