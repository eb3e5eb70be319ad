/* The KnowBe4 source form: "+Add Field" rows and the live schema check.
   The server checks every rule again; this only gives feedback while typing. */
(function () {
  "use strict";
  var form = document.getElementById("source-form");
  if (!form) return;
  var rows = document.getElementById("field-rows");
  var template = document.getElementById("field-row-template");
  var addLink = document.getElementById("add-field");
  var limitNote = document.getElementById("field-limit");
  var autoAdd = document.getElementById("auto-add");
  var max = parseInt(rows.getAttribute("data-max"), 10) || 10;
  var schema = new Set(
    JSON.parse(document.getElementById("schema-names").textContent).map(function (n) {
      return n.toLowerCase();
    })
  );

  function rowCount() {
    return rows.querySelectorAll("[data-field-row]").length;
  }

  function refreshLimit() {
    var full = rowCount() >= max;
    addLink.hidden = full;
    limitNote.hidden = !full;
  }

  /* Green check when the key is an enabled schema field, orange mark otherwise;
     the auto-add option shows while any typed key is missing. */
  function refreshIndicators() {
    var anyMissing = false;
    rows.querySelectorAll("[data-field-row]").forEach(function (row) {
      var key = row.querySelector(".field-key").value.trim();
      var known = schema.has(key.toLowerCase());
      row.querySelector(".indicator-ok").hidden = !key || !known;
      row.querySelector(".indicator-missing").hidden = !key || known;
      row.classList.toggle("is-missing", Boolean(key) && !known);
      if (key && !known) anyMissing = true;
    });
    autoAdd.hidden = !anyMissing;
  }

  function addRow() {
    if (rowCount() >= max) return;
    var row = template.content.firstElementChild.cloneNode(true);
    rows.appendChild(row);
    row.querySelector(".field-key").focus();
    refreshLimit();
    refreshIndicators();
  }

  addLink.addEventListener("click", function (event) {
    event.preventDefault();
    addRow();
  });
  rows.addEventListener("input", function (event) {
    if (event.target.classList.contains("field-key")) refreshIndicators();
  });
  rows.addEventListener("click", function (event) {
    var button = event.target.closest(".remove-field");
    if (!button) return;
    button.closest("[data-field-row]").remove();
    refreshLimit();
    refreshIndicators();
  });
  refreshLimit();
  refreshIndicators();
})();
