// SynthMed pages work without this file; it adds copy buttons and arrow-key navigation.
(function () {
  "use strict";

  // Copy buttons on code blocks (shown only where the clipboard API exists).
  if (navigator.clipboard && window.isSecureContext !== false) {
    document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
      var target = document.getElementById(button.getAttribute("data-copy"));
      if (!target) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(target.textContent).then(function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 1500);
        }, function () {
          button.textContent = "Select and copy";
        });
      });
    });
  }

  // Left/right arrow keys follow the page's rel=prev / rel=next links (sample pages).
  var nav = document.querySelector(".sample-nav");
  if (!nav) return;
  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    var el = event.target;
    var tag = el && el.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT" || (el && el.isContentEditable)) return;
    if (tag === "INPUT" && el.type !== "checkbox") return;
    var rel = event.key === "ArrowLeft" ? "prev" : event.key === "ArrowRight" ? "next" : null;
    if (!rel) return;
    var link = nav.querySelector('a[rel="' + rel + '"]');
    if (!link) return;
    event.preventDefault();
    window.location.assign(link.href);
  });
})();
