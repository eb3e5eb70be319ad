// Monitor and connection forms: show only the fieldsets of the chosen kind.
// Without JavaScript every fieldset stays visible and the server ignores the
// fields of the other kind.
(function () {
  "use strict";
  const form = document.querySelector("form.kind-form");
  if (!form) return;
  function chosen() {
    const radio = form.querySelector("input[name=kind]:checked");
    if (radio) return radio.value;
    const select = form.querySelector("select[name=kind]");
    return select ? select.value : "";
  }
  function update() {
    const kind = chosen();
    form.querySelectorAll(".for-kind").forEach(function (el) {
      el.hidden = kind !== "" && !el.dataset.kinds.split(" ").includes(kind);
    });
  }
  form.addEventListener("change", function (event) {
    if (event.target.name === "kind") update();
  });
  update();
})();
