"""The dev tools: devhub (a local Hub) and the finetune pool. Used by tests, benchmarks, scripts and the
``hubdelta devhub`` commands; the product never imports them (enforced by lint-imports)."""
