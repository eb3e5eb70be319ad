/* The source form's quota figures, live: while the user edits the settings
   they depend on (Licensed users, re-scan, today's poll, data types, poll
   interval), the figures fragment is asked for again with those values and
   swapped in, a moment after the typing stops. The server computes and
   renders it (and checks the values); this only sends the listed fields,
   never the API key, and shows what comes back. */
(function () {
  "use strict";
  var form = document.getElementById("source-form");
  var box = form && form.querySelector("[data-quota-url]");
  if (!box) return;
  var names = box.getAttribute("data-quota-fields").split(" ");
  var timer = null;
  var asked = 0;

  function query() {
    var params = new URLSearchParams();
    names.forEach(function (name) {
      form.querySelectorAll('[name="' + name + '"]').forEach(function (input) {
        if ((input.type === "checkbox" || input.type === "radio") && !input.checked) {
          return;
        }
        params.append(name, input.value);
      });
    });
    return params.toString();
  }

  function refresh() {
    var mine = ++asked;
    fetch(box.getAttribute("data-quota-url") + "&" + query(), {
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch" },
    })
      .then(function (response) {
        return response.text();
      })
      .then(function (html) {
        if (mine === asked) box.innerHTML = html; // only the latest answer
      })
      .catch(function () {
        /* The figures stay as they were; Save still checks everything. */
      });
  }

  function changed(event) {
    if (names.indexOf(event.target.name) < 0) return;
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  }

  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
  // After a failed Save the page shows the stored settings' figures: show
  // those of the values sent back instead.
  if (document.getElementById("error-summary")) refresh();
})();
