/* Health and status on the Collection page (and the source page).
 *
 * - Hover or focus a status icon: a tooltip with the open error and warning
 *   counts and the last successful collection ("2 errors, 1 warning").
 * - Click it: the Health Events panel (a server-rendered fragment fetched from
 *   the icon's data-health-url) opens in #health-panel-slot; focus moves into
 *   it; Escape or the close button closes it and focus returns to the icon.
 * - While the tab is visible, poll the collection-status endpoint every few
 *   seconds and put the cells it renders (health, status with backfill
 *   progress and the states just passed, messages, activity) in place; rows
 *   whose resource is gone leave the page.
 * Plain JS, no framework; the only markup inserted is what the server
 * rendered and escaped (cells and the panel fragment).
 */
(function () {
  "use strict";

  var POLL_MS = 4000;
  var slot = document.getElementById("health-panel-slot");
  var script = document.currentScript;
  var statusUrl =
    (slot && slot.dataset.statusUrl) ||
    (script && script.dataset.statusUrl) ||
    "/collection/status/";
  var tooltip = null;
  var opener = null; // the icon whose panel is open
  var openUrl = null;
  var pollTimer = null;

  /* ---- tooltip ---------------------------------------------------------- */

  function ensureTooltip() {
    if (!tooltip) {
      tooltip = document.createElement("div");
      tooltip.id = "health-tooltip";
      tooltip.className = "health-tooltip";
      tooltip.setAttribute("role", "tooltip");
      tooltip.hidden = true;
      document.body.appendChild(tooltip);
    }
    return tooltip;
  }

  function showTooltip(icon) {
    var tip = ensureTooltip();
    tip.textContent = "";
    var counts = document.createElement("strong");
    counts.textContent = icon.dataset.tooltip || "";
    var last = document.createElement("span");
    last.textContent = icon.dataset.lastSuccess || "";
    tip.appendChild(counts);
    tip.appendChild(last);
    tip.hidden = false;
    var r = icon.getBoundingClientRect();
    var left = Math.min(
      r.left + window.scrollX,
      window.scrollX + document.documentElement.clientWidth - tip.offsetWidth - 8
    );
    tip.style.left = Math.max(8, left) + "px";
    tip.style.top = r.bottom + window.scrollY + 6 + "px";
    icon.setAttribute("aria-describedby", "health-tooltip");
  }

  function hideTooltip(icon) {
    if (tooltip) tooltip.hidden = true;
    if (icon) icon.removeAttribute("aria-describedby");
  }

  function iconFrom(target) {
    return target && target.closest ? target.closest(".status-icon") : null;
  }

  document.addEventListener("mouseover", function (e) {
    var icon = iconFrom(e.target);
    if (icon) showTooltip(icon);
  });
  document.addEventListener("mouseout", function (e) {
    var icon = iconFrom(e.target);
    if (icon && !icon.contains(e.relatedTarget)) hideTooltip(icon);
  });
  document.addEventListener("focusin", function (e) {
    var icon = iconFrom(e.target);
    if (icon) showTooltip(icon);
  });
  document.addEventListener("focusout", function (e) {
    var icon = iconFrom(e.target);
    if (icon) hideTooltip(icon);
  });

  /* ---- the Health Events panel ------------------------------------------ */

  function panelSlot() {
    if (!slot) {
      slot = document.createElement("div");
      slot.id = "health-panel-slot";
      document.querySelector("main").appendChild(slot);
    }
    return slot;
  }

  function fetchPanel(url) {
    return fetch(url, {
      headers: { "X-Requested-With": "fetch" },
      credentials: "same-origin",
    }).then(function (resp) {
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      return resp.text();
    });
  }

  function openPanel(icon) {
    var url = icon.dataset.healthUrl;
    if (!url) return;
    // Restart in the panel comes back to this page (the server checks it).
    url += (url.indexOf("?") < 0 ? "?" : "&") +
      "next=" + encodeURIComponent(window.location.pathname + window.location.search);
    hideTooltip(icon);
    fetchPanel(url)
      .then(function (html) {
        var target = panelSlot();
        target.innerHTML = html;
        target.classList.add("open");
        opener = icon;
        openUrl = url;
        icon.setAttribute("aria-expanded", "true");
        var panel = target.querySelector(".health-panel");
        if (panel) panel.focus({ preventScroll: true });
      })
      .catch(function (err) {
        var target = panelSlot();
        target.textContent = "The Health Events panel could not be loaded (" + err.message + ").";
        target.classList.add("open");
      });
  }

  function closePanel() {
    if (!slot || !slot.classList.contains("open")) return;
    slot.innerHTML = "";
    slot.classList.remove("open");
    var back = opener;
    opener = null;
    openUrl = null;
    if (back) {
      back.setAttribute("aria-expanded", "false");
      back.focus({ preventScroll: true });
      hideTooltip(back);
    }
  }

  document.addEventListener("click", function (e) {
    var icon = iconFrom(e.target);
    if (icon) {
      e.preventDefault();
      if (opener === icon && slot && slot.classList.contains("open")) {
        closePanel();
      } else {
        openPanel(icon);
      }
      return;
    }
    if (e.target.closest && e.target.closest(".panel-close")) closePanel();
  });

  document.addEventListener("keydown", function (e) {
    if (e.key !== "Escape") return;
    if (slot && slot.classList.contains("open")) {
      e.preventDefault();
      closePanel();
    } else if (tooltip && !tooltip.hidden) {
      hideTooltip(iconFrom(document.activeElement));
    }
  });

  /* ---- polling ------------------------------------------------------------ */

  // The server renders every live cell (collectors/cells.py); this only puts
  // its markup in place. `served` remembers what the server last sent for a
  // cell, so an unchanged cell is left alone (and keeps focus and hover).
  var served = new WeakMap();
  var since = (function () {
    var el = document.querySelector("[data-status-since]");
    return el ? el.getAttribute("data-status-since") : "";
  })();

  function ownCells(row) {
    var out = [];
    row.querySelectorAll("[data-live]").forEach(function (cell) {
      if (cell.closest("[data-source-id],[data-collector-id]") === row) out.push(cell);
    });
    return out;
  }

  function putCell(cell, markup) {
    if (markup === undefined || served.get(cell) === markup) return false;
    if (!served.has(cell) && cell.innerHTML === markup) {
      served.set(cell, markup);
      return false;
    }
    var icon = cell.querySelector(".status-icon");
    var wasOpener = icon && icon === opener;
    var hadFocus = cell.contains(document.activeElement);
    cell.innerHTML = markup;
    served.set(cell, markup);
    var fresh = cell.querySelector(".status-icon");
    if (wasOpener && fresh) {
      opener = fresh;
      fresh.setAttribute("aria-expanded", "true");
    }
    if (hadFocus) {
      var again = fresh || cell.querySelector("a,button,[tabindex]");
      if (again) again.focus({ preventScroll: true });
    }
    return Boolean(wasOpener);
  }

  function applyRow(row, item) {
    var refreshPanel = false;
    ownCells(row).forEach(function (cell) {
      var changed = putCell(cell, item.cells[cell.getAttribute("data-live")]);
      if (changed && cell.getAttribute("data-live") === "health") refreshPanel = true;
    });
    return refreshPanel;
  }

  function removeGone(gone) {
    (gone.sources || []).forEach(function (id) {
      document.querySelectorAll('[data-source-id="' + id + '"]').forEach(function (row) {
        if (row.tagName === "TR") row.remove();
      });
    });
    (gone.collectors || []).forEach(function (id) {
      var group = document.querySelector('[data-group="' + id + '"]');
      if (group) group.remove();
    });
  }

  function apply(data) {
    var refreshPanel = false;
    function each(items, attr) {
      items.forEach(function (item) {
        document.querySelectorAll("[" + attr + '="' + item.id + '"]').forEach(function (row) {
          if (applyRow(row, item)) refreshPanel = true;
        });
      });
    }
    each(data.sources || [], "data-source-id");
    each(data.collectors || [], "data-collector-id");
    if (data.gone) removeGone(data.gone);
    if (data.now) since = data.now;
    if (refreshPanel && openUrl) {
      fetchPanel(openUrl).then(function (html) {
        if (!openUrl) return;
        var hadFocus = slot.contains(document.activeElement);
        slot.innerHTML = html;
        var panel = slot.querySelector(".health-panel");
        if (hadFocus && panel) panel.focus({ preventScroll: true });
      });
    }
    document.dispatchEvent(new CustomEvent("health:refreshed"));
  }

  function idsOf(attr) {
    var seen = {};
    document.querySelectorAll("[" + attr + "]").forEach(function (el) {
      seen[el.getAttribute(attr)] = true;
    });
    return Object.keys(seen).join(",");
  }

  function scopedUrl() {
    // Only the rows on this page: the answer stays small on a big installation.
    var params = new URLSearchParams();
    var collectors = idsOf("data-collector-id");
    var sources = idsOf("data-source-id");
    if (collectors) params.set("collectors", collectors);
    if (sources) params.set("sources", sources);
    if (since) params.set("since", since);
    // The source page: its facts as well (checkpoint, freshness, quota...).
    var detail = document.querySelector("[data-status-detail]");
    if (detail) params.set("detail", detail.getAttribute("data-status-detail"));
    return statusUrl + (statusUrl.indexOf("?") < 0 ? "?" : "&") + params.toString();
  }

  function poll() {
    if (document.visibilityState !== "visible") return;
    fetch(scopedUrl(), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (resp) {
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      })
      .then(apply)
      .catch(function () {
        /* a missed refresh is retried at the next tick */
      });
  }

  function startPolling() {
    if (pollTimer || !document.querySelector("[data-source-id],[data-collector-id]")) return;
    pollTimer = window.setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer) window.clearInterval(pollTimer);
    pollTimer = null;
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      poll();
      startPolling();
    } else {
      stopPolling();
    }
  });

  if (document.visibilityState === "visible") startPolling();

  window.knowbe4Health = { poll: poll, close: closePanel };
})();
