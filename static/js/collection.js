/* The Collection page: expand/collapse per collector and for all, and the
   Show filter applied as soon as it changes. Without JavaScript every
   collector stays expanded and the Filter button applies the Show filter.
   Collapsed collectors are remembered in this browser (localStorage). */
(function () {
  "use strict";
  var KEY = "knowbe4sumo.collapsed";
  var table = document.querySelector(".collection-table");
  if (!table) return;

  function load() {
    try {
      return JSON.parse(window.localStorage.getItem(KEY) || "[]");
    } catch (err) {
      return [];
    }
  }

  function save(ids) {
    try {
      window.localStorage.setItem(KEY, JSON.stringify(ids));
    } catch (err) {
      /* private mode: the state lasts for this page only */
    }
  }

  var collapsed = new Set(load().map(String));

  function setGroup(button, expanded) {
    var id = button.getAttribute("data-toggle");
    var group = button.closest("tbody");
    var name = group.querySelector(".collector-name").textContent;
    button.setAttribute("aria-expanded", expanded ? "true" : "false");
    button.setAttribute("aria-label", (expanded ? "Collapse " : "Expand ") + name);
    group.classList.toggle("collapsed", !expanded);
    if (expanded) collapsed.delete(id);
    else collapsed.add(id);
  }

  var toggles = table.querySelectorAll("[data-toggle]");
  toggles.forEach(function (button) {
    button.hidden = false;
    setGroup(button, !collapsed.has(button.getAttribute("data-toggle")));
  });

  table.addEventListener("click", function (event) {
    var button = event.target.closest("[data-toggle]");
    if (!button) return;
    setGroup(button, button.getAttribute("aria-expanded") !== "true");
    save(Array.from(collapsed));
  });

  var controls = document.querySelector(".expand-controls");
  if (controls && toggles.length) {
    controls.hidden = false;
    controls.addEventListener("click", function (event) {
      var all = event.target.closest("[data-expand-all],[data-collapse-all]");
      if (!all) return;
      var expand = all.hasAttribute("data-expand-all");
      table.querySelectorAll("[data-toggle]").forEach(function (button) {
        setGroup(button, expand);
      });
      save(Array.from(collapsed));
    });
  }

  var show = document.querySelector(".show-select");
  if (show && show.form) {
    show.addEventListener("change", function () {
      show.form.submit();
    });
  }
})();
