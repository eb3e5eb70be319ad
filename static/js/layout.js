/* Page-wide behaviour loaded by base.html on every page (no inline script:
 * the Content Security Policy allows only files from static/).
 *
 * - The browser's time zone goes into the kb4_tz cookie, so a user who
 *   chose "My browser's time zone" sees local times; when the page was
 *   drawn in another zone than the browser's, it is reloaded once.
 * - On a narrow screen the main menu collapses behind a Menu button.
 * - On a narrow screen the Collection table shows Name, Health and Status;
 *   a button shows the other columns.
 */
(function () {
  "use strict";

  var root = document.documentElement;

  /* ---- time zone -------------------------------------------------------- */

  function browserZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      return "";
    }
  }

  var zone = browserZone();
  // IANA names are cookie-safe ("Asia/Tokyo", "America/Port-au-Prince").
  if (zone && /^[A-Za-z0-9_+\-\/]{1,64}$/.test(zone)) {
    var known = (document.cookie.match(/(?:^|; )kb4_tz=([^;]*)/) || [])[1];
    document.cookie =
      "kb4_tz=" + zone + "; path=/; max-age=31536000; SameSite=Lax";
    var stale =
      root.dataset.tzMode === "browser" &&
      root.dataset.tzActive !== zone &&
      (known || "") !== zone;
    // Reload once (the cookie was missing or out of date), never in a loop.
    if (stale && !sessionStorage.getItem("kb4-tz-reloaded")) {
      sessionStorage.setItem("kb4-tz-reloaded", "1");
      window.location.reload();
      return;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpMenu();
    setUpColumnToggle();
    markScrollers();
    window.addEventListener("resize", markScrollers);
  });

  /* ---- a table that scrolls sideways can be scrolled with the keyboard -- */

  function markScrollers() {
    document.querySelectorAll("table.grid").forEach(function (table) {
      if (table.scrollWidth > table.clientWidth + 1) {
        table.tabIndex = 0;
        if (!table.hasAttribute("aria-label") && !table.hasAttribute("aria-labelledby")) {
          table.setAttribute("aria-label", "Table, scrolls sideways");
        }
      } else if (table.getAttribute("tabindex") === "0") {
        table.removeAttribute("tabindex");
      }
    });
  }

  /* ---- collapsible menu ------------------------------------------------- */

  function setUpMenu() {
    var bar = document.querySelector(".topbar");
    var button = bar && bar.querySelector(".menu-toggle");
    var menu = document.getElementById("topnav");
    if (!button || !menu) return;
    bar.classList.add("collapsible");
    button.hidden = false;

    function setOpen(open) {
      button.setAttribute("aria-expanded", open ? "true" : "false");
      bar.classList.toggle("menu-open", open);
    }
    button.addEventListener("click", function () {
      setOpen(button.getAttribute("aria-expanded") !== "true");
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && bar.classList.contains("menu-open")) {
        setOpen(false);
        button.focus();
      }
    });
  }

  /* ---- Collection table: more columns on a phone ------------------------ */

  function setUpColumnToggle() {
    var table = document.querySelector(".collection-table");
    if (!table || table.dataset.columnToggle) return;
    table.dataset.columnToggle = "1";
    var button = document.createElement("button");
    button.type = "button";
    button.className = "button columns-toggle";
    button.setAttribute("aria-pressed", "false");
    button.textContent = "Show all columns";
    button.addEventListener("click", function () {
      var all = !table.classList.contains("all-columns");
      table.classList.toggle("all-columns", all);
      button.setAttribute("aria-pressed", all ? "true" : "false");
      button.textContent = all ? "Show fewer columns" : "Show all columns";
    });
    var holder = table.closest(".collection-layout") || table;
    holder.parentNode.insertBefore(button, holder);
  }
})();
