// The editor's Write / Preview tabs: Preview sends the text to the server, which renders
// it exactly as it would be posted (Markdown, math, code, the finding's figures) and
// sanitizes it; the answer is shown in place. Without JavaScript the form works as
// before. The element with class "editor" carries data-preview-url and data-csrf.
(function () {
  "use strict";

  function setup(editor) {
    var area = editor.querySelector("textarea");
    var url = editor.getAttribute("data-preview-url");
    var csrf = editor.getAttribute("data-csrf");
    if (!area || !url) { return; }
    var n = editor.getAttribute("data-editor-id") || area.id;

    var tabs = document.createElement("div");
    tabs.className = "editor-tabs";
    tabs.setAttribute("role", "tablist");
    tabs.setAttribute("aria-label", "Editor");
    var write = tab("Write", true);
    var show = tab("Preview", false);
    tabs.appendChild(write);
    tabs.appendChild(show);

    var pane = document.createElement("div");
    pane.className = "prose editor-preview";
    pane.id = n + "-preview";
    pane.setAttribute("role", "tabpanel");
    pane.setAttribute("aria-live", "polite");
    pane.hidden = true;
    write.setAttribute("aria-controls", area.id);
    show.setAttribute("aria-controls", pane.id);

    area.parentNode.insertBefore(tabs, area);
    area.parentNode.insertBefore(pane, area.nextSibling);

    function tab(label, selected) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "editor-tab";
      b.setAttribute("role", "tab");
      b.setAttribute("aria-selected", selected ? "true" : "false");
      b.textContent = label;
      return b;
    }

    function select(which) {
      var previewing = which === show;
      write.setAttribute("aria-selected", previewing ? "false" : "true");
      show.setAttribute("aria-selected", previewing ? "true" : "false");
      area.hidden = previewing;
      pane.hidden = !previewing;
    }

    function message(text) {
      pane.textContent = "";
      var p = document.createElement("p");
      p.className = "muted";
      p.textContent = text;
      pane.appendChild(p);
    }

    write.addEventListener("click", function () { select(write); area.focus(); });
    show.addEventListener("click", function () {
      select(show);
      message("Rendering…");
      var body = new URLSearchParams();
      body.set("body", area.value);
      fetch(url, {
        method: "POST", credentials: "same-origin", body: body,
        headers: { "X-CSRFToken": csrf, "Accept": "application/json" }
      }).then(function (r) {
        return r.json().then(function (data) { return { ok: r.ok, data: data }; });
      }).then(function (res) {
        if (!res.ok) {
          message((res.data.error && res.data.error.message) || "The preview failed.");
        } else if (!res.data.html) {
          message("Nothing to preview yet.");
        } else {
          // sanitized on the server, as every rendering the pages show
          pane.innerHTML = res.data.html;
        }
      }).catch(function () { message("The preview failed: the server did not answer."); });
    });
  }

  var editors = document.querySelectorAll(".editor[data-preview-url]");
  for (var i = 0; i < editors.length; i += 1) { setup(editors[i]); }
}());
