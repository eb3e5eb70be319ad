/* Health and status on the Collection page (and the source page).
 *
 * - Hover or focus a status icon: a tooltip with the open error and warning
 *   counts and the last successful collection ("2 errors, 1 warning").
 * - Click it: the Health Events panel (a server-rendered fragment fetched from
 *   the icon's data-health-url) opens in #health-panel-slot; focus moves into
 *   it; Escape or the close button closes it and focus returns to the icon.
 * - While the tab is visible, poll the collection-status endpoint every few
 *   seconds and update state labels and icons in place.
 * Plain JS, no framework; everything the server says arrives as text, never HTML
 * except the panel fragment, which the server rendered and escaped.
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

  function rowIcon(row) {
    var icons = row.querySelectorAll(".status-icon");
    for (var i = 0; i < icons.length; i++) {
      if (icons[i].closest("[data-source-id],[data-collector-id]") === row) return icons[i];
    }
    return null;
  }

  function applyLook(icon, item) {
    var changed = icon.dataset.tooltip !== item.tooltip || icon.dataset.status !== item.status;
    icon.className = icon.className.replace(/\bstatus-(green|orange|red|grey)\b/g, "").trim();
    icon.classList.add("status-" + item.colour);
    icon.dataset.status = item.status;
    icon.dataset.errors = item.errors;
    icon.dataset.warnings = item.warnings;
    icon.dataset.tooltip = item.tooltip;
    icon.dataset.lastSuccess = item.last_success_text;
    icon.setAttribute(
      "aria-label",
      "Health: " + item.label + ", " + item.tooltip + ". " + item.last_success_text
    );
    var img = icon.querySelector("img");
    if (img && img.getAttribute("src") !== item.icon) img.setAttribute("src", item.icon);
    return changed;
  }

  function applyState(row, item) {
    var label = row.querySelector("[data-state]");
    if (!label || label.dataset.stateKey === item.state) return;
    label.className = label.className.replace(/\bstate-[a-z]+\b/g, "").trim();
    label.classList.add("state-" + item.state);
    label.textContent = item.state_label;
    label.dataset.stateKey = item.state;
  }

  function apply(data) {
    var refreshPanel = false;
    function each(items, attr, withState) {
      items.forEach(function (item) {
        var rows = document.querySelectorAll("[" + attr + '="' + item.id + '"]');
        rows.forEach(function (row) {
          if (withState) applyState(row, item);
          var icon = rowIcon(row);
          if (icon && applyLook(icon, item) && icon === opener) refreshPanel = true;
        });
      });
    }
    each(data.sources || [], "data-source-id", true);
    each(data.collectors || [], "data-collector-id", false);
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

  document.querySelectorAll("[data-state]").forEach(function (label) {
    var m = /\bstate-([a-z]+)\b/.exec(label.className);
    if (m) label.dataset.stateKey = m[1];
  });
  if (document.visibilityState === "visible") startPolling();

  window.knowbe4Health = { poll: poll, close: closePanel };
})();
