/* The messages page: keep the filter URL short and the time filters coherent.
 *
 * - Choosing a quick range ("Last 7 days") clears the explicit From field, and
 *   typing a From date resets the quick range, so the two never disagree.
 * - Empty filters are left out of the URL on submit, so shared links and the
 *   export links stay readable.
 */
(function () {
  "use strict";

  var form = document.getElementById("message-filters");
  if (!form) return;
  var range = form.elements.namedItem("range");
  var since = form.elements.namedItem("since");

  if (range && since) {
    range.addEventListener("change", function () {
      if (range.value) since.value = "";
    });
    since.addEventListener("input", function () {
      if (since.value) range.value = "";
    });
  }

  form.addEventListener("submit", function () {
    Array.prototype.forEach.call(form.elements, function (el) {
      if (el.name && !el.value) el.disabled = true;
    });
    window.setTimeout(function () {
      Array.prototype.forEach.call(form.elements, function (el) {
        el.disabled = false;
      });
    }, 0);
  });
})();
