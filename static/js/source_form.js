/* The KnowBe4 source form: "+Add Field" rows, the live schema and naming
   check of each key, focus on the first problem after a failed Save, and
   errors that clear as soon as the field is fixed.
   The server checks every rule again on Save; this only gives feedback while
   typing, with the server's own words (the naming rules arrive as JSON). */
(function () {
  "use strict";
  var form = document.getElementById("source-form");
  if (!form) return;
  var rows = document.getElementById("field-rows");
  var template = document.getElementById("field-row-template");
  var addButton = document.getElementById("add-field");
  var limitNote = document.getElementById("field-limit");
  var autoAdd = document.getElementById("auto-add");
  var max = parseInt(rows.getAttribute("data-max"), 10) || 10;
  var schema = new Set(
    JSON.parse(document.getElementById("schema-names").textContent).map(function (n) {
      return n.toLowerCase();
    })
  );
  var rules = JSON.parse(document.getElementById("key-rules").textContent);
  var reserved = new Set(rules.reserved);
  var nextRowId = 1000;

  /* The first naming rule a key breaks (collectors/fieldnames.key_error). */
  function keyError(key) {
    var m = rules.messages;
    if (!key) return null; // an empty row is simply ignored
    if (key.length > rules.max) return m.length;
    if (!/^[A-Za-z_]/.test(key)) return m.start;
    if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(key)) return m.chars;
    if (key.indexOf("..") >= 0) return m.dots;
    if (reserved.has(key.toLowerCase())) return m.reserved.replace("{key}", key);
    return null;
  }

  function rowCount() {
    return rows.querySelectorAll("[data-field-row]").length;
  }

  function refreshLimit() {
    var full = rowCount() >= max;
    addButton.hidden = full;
    limitNote.hidden = !full;
  }

  function rowErrorList(row) {
    var list = row.querySelector(".key-error");
    if (!list.id) list.id = "field-key-" + nextRowId++ + "-error";
    return list;
  }

  /* Per row: red "invalid" mark and the rule while the key breaks one; else
     the green check (in the schema) or the orange mark (will be dropped).
     The auto-add option shows while any valid typed key is missing. */
  function refreshRow(row) {
    var input = row.querySelector(".field-key");
    var key = input.value.trim();
    var error = keyError(key);
    // A rule only the server knows (a key given twice) holds until edited.
    if (!error && row.dataset.serverError && input.value === row.dataset.serverKey) {
      error = row.dataset.serverError;
    }
    var known = schema.has(key.toLowerCase());
    row.querySelector(".indicator-invalid").hidden = !error;
    row.querySelector(".indicator-ok").hidden = !key || Boolean(error) || !known;
    row.querySelector(".indicator-missing").hidden = !key || Boolean(error) || known;
    row.classList.toggle("is-missing", Boolean(key) && !error && !known);
    row.classList.toggle("has-error", Boolean(error));
    var list = rowErrorList(row);
    list.textContent = "";
    if (error) {
      var item = document.createElement("li");
      item.textContent = error;
      list.appendChild(item);
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", list.id);
    } else {
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
    }
    list.hidden = !error;
    return Boolean(key) && !error && !known;
  }

  function refreshIndicators() {
    var anyMissing = false;
    rows.querySelectorAll("[data-field-row]").forEach(function (row) {
      if (refreshRow(row)) anyMissing = true;
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

  /* A real <button>: Enter and Space both press it. */
  addButton.addEventListener("click", function (event) {
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

  /* ---- errors of the other fields ------------------------------------ */

  // What the failed Save sent, per field: an error that only the server can
  // check (a name already taken) clears once the value differs from it.
  var failed = {};

  function clientProblem(field, input) {
    var value = (input.value || "").trim();
    if (field.classList.contains("required") && !value && input.name !== "api_key") {
      return true;
    }
    if (input.name === "api_key" && value) {
      if (/\s/.test(input.value.trim()) || value.length < 8) return true;
    }
    if (input.type === "number" && value) {
      var n = Number(value);
      var lo = input.min === "" ? -Infinity : Number(input.min);
      var hi = input.max === "" ? Infinity : Number(input.max);
      if (!Number.isInteger(n) || n < lo || n > hi) return true;
    }
    return false;
  }

  function refreshField(field) {
    var input = field.querySelector("input, select, textarea");
    var errors = field.querySelector(":scope > .errorlist");
    if (!input || !errors) return;
    var fixed = !clientProblem(field, input) && input.value !== failed[input.name];
    errors.hidden = fixed;
    field.classList.toggle("has-error", !fixed);
    if (fixed) input.removeAttribute("aria-invalid");
    else input.setAttribute("aria-invalid", "true");
    var note = field.querySelector(".reentry-note");
    if (note && input.name === "api_key") note.hidden = Boolean(input.value);
  }

  form.querySelectorAll(".field.has-error[data-field]").forEach(function (field) {
    var input = field.querySelector("input, select, textarea");
    if (input) failed[input.name] = input.value;
  });
  form.addEventListener("input", function (event) {
    var field = event.target.closest(".field[data-field]");
    if (field && field.querySelector(":scope > .errorlist")) refreshField(field);
  });
  form.addEventListener("change", function (event) {
    var field = event.target.closest(".field[data-field]");
    if (field && field.querySelector(":scope > .errorlist")) refreshField(field);
  });

  /* After a failed Save: focus the first field with an error (opening the
     Advanced section if that is where it is). The summary's links do the
     same for each problem. */
  function focusTarget(id) {
    var target = document.getElementById(id);
    if (!target) return false;
    var details = target.closest("details");
    if (details) details.open = true;
    target.focus();
    return true;
  }

  var summary = document.getElementById("error-summary");
  if (summary) {
    summary.addEventListener("click", function (event) {
      var link = event.target.closest("[data-focus]");
      if (link && focusTarget(link.getAttribute("data-focus"))) event.preventDefault();
    });
    var first = summary.querySelector("[data-focus]");
    if (first) focusTarget(first.getAttribute("data-focus"));
  }

  rows.querySelectorAll("[data-field-row]").forEach(function (row) {
    var served = row.querySelector(".key-error li");
    if (served) {
      row.dataset.serverError = served.textContent;
      row.dataset.serverKey = row.querySelector(".field-key").value;
    }
  });

  /* Test connection: POST the Base URL and key (with the CSRF token) and show
     the server's result fragment in place; nothing is saved. A plain button,
     not a submit: Enter in a field still means Save. */
  var testButton = document.getElementById("test-connection");
  var testResult = document.getElementById("connection-result");
  if (testButton && testResult) {
    document.getElementById("connection-test").hidden = false;
    testButton.addEventListener("click", function (event) {
      event.preventDefault();
      testButton.disabled = true;
      testResult.textContent = "Testing…";
      fetch(testButton.getAttribute("data-url"), {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: { "X-Requested-With": "fetch" },
      })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          testResult.innerHTML = html;
        })
        .catch(function (error) {
          testResult.textContent = "The test could not be run (" + error.message + ").";
        })
        .finally(function () {
          testButton.disabled = false;
        });
    });
  }

  refreshLimit();
  refreshIndicators();
})();
