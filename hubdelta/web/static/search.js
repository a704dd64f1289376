// Repo-id completion for the search box (templates/searchbox.html). Without this file the box is a plain GET
// form to /search; with it, each keystroke (debounced) asks /api/complete and lists links to model pages.
// Repo ids come from the index: they are written with textContent, never as HTML.
"use strict";

(() => {
  const input = document.getElementById("q");
  const list = document.getElementById("suggestions");
  if (!input || !list) return;
  const root = document.body.dataset.root || "";
  let timer = 0;
  let asked = 0; // the number of the latest request: older answers arriving late are dropped

  const modelHref = (repo) => `${root}/models/${repo.split("/").map(encodeURIComponent).join("/")}`;

  function close() {
    list.hidden = true;
    input.setAttribute("aria-expanded", "false");
  }

  function show(ids) {
    list.replaceChildren(
      ...ids.map((repo) => {
        const li = document.createElement("li");
        li.setAttribute("role", "option");
        const a = document.createElement("a");
        a.href = modelHref(repo);
        a.textContent = repo;
        li.append(a);
        return li;
      })
    );
    list.hidden = ids.length === 0;
    input.setAttribute("aria-expanded", String(ids.length > 0));
  }

  async function complete(text) {
    const mine = ++asked;
    try {
      const res = await fetch(`${root}/api/complete?limit=10&q=${encodeURIComponent(text)}`, {
        headers: { Accept: "application/json" },
      });
      if (!res.ok) return;
      const body = await res.json();
      if (mine === asked) show(Array.isArray(body.repo_ids) ? body.repo_ids : []);
    } catch (_) {
      // offline or the server restarting: the form still works
    }
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    const text = input.value.trim();
    if (!text) {
      asked++;
      close();
      return;
    }
    timer = setTimeout(() => complete(text), 120);
  });

  // Arrow keys move between the input and the suggestions; Escape closes them.
  const links = () => Array.from(list.querySelectorAll("a"));
  function onKey(event) {
    const all = links();
    const at = all.indexOf(document.activeElement);
    if (event.key === "ArrowDown" && all.length) {
      event.preventDefault();
      all[Math.min(at + 1, all.length - 1)].focus();
    } else if (event.key === "ArrowUp" && at >= 0) {
      event.preventDefault();
      (at === 0 ? input : all[at - 1]).focus();
    } else if (event.key === "Escape") {
      close();
      input.focus();
    }
  }
  input.addEventListener("keydown", onKey);
  list.addEventListener("keydown", onKey);
  document.addEventListener("click", (event) => {
    if (!list.contains(event.target) && event.target !== input) close();
  });
})();
