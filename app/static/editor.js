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

    // the tabs and the formatting buttons share a row; a tablist holds only tabs
    var bar = document.createElement("div");
    bar.className = "editor-bar";
    bar.appendChild(tabs);
    area.parentNode.insertBefore(bar, area);
    area.parentNode.insertBefore(pane, area.nextSibling);
    var tools = toolbar(area);
    bar.appendChild(tools);

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
      tools.hidden = previewing;
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

  // A few formatting buttons: each wraps the selection (or a placeholder word) in the
  // Markdown for it, or starts the selected lines with it.
  var FORMATS = [
    { label: "B", name: "Bold", before: "**", after: "**", word: "bold" },
    { label: "I", name: "Italic", before: "_", after: "_", word: "italic" },
    { label: "</>", name: "Code", before: "`", after: "`", word: "code" },
    { label: "∑", name: "Math", before: "$", after: "$", word: "x^2" },
    { label: "Link", name: "Link", before: "[", after: "](https://)", word: "text" },
    { label: "❝", name: "Quote", line: "> " },
    { label: "•", name: "List", line: "- " }
  ];

  function toolbar(area) {
    var bar = document.createElement("div");
    bar.className = "editor-tools";
    bar.setAttribute("role", "group");
    bar.setAttribute("aria-label", "Formatting");
    FORMATS.forEach(function (f) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "editor-tool";
      b.textContent = f.label;
      b.title = f.name;
      b.setAttribute("aria-label", f.name);
      b.addEventListener("click", function () { apply(area, f); });
      bar.appendChild(b);
    });
    return bar;
  }

  function apply(area, f) {
    var start = area.selectionStart;
    var end = area.selectionEnd;
    var text = area.value;
    var chosen = text.slice(start, end);
    var replaced;
    var selStart;
    var selEnd;
    if (f.line) {
      var lineStart = text.lastIndexOf("\n", start - 1) + 1;
      var block = text.slice(lineStart, end) || "";
      replaced = block.split("\n").map(function (l) { return f.line + l; }).join("\n");
      area.value = text.slice(0, lineStart) + replaced + text.slice(end);
      selStart = lineStart;
      selEnd = lineStart + replaced.length;
    } else {
      var inner = chosen || f.word;
      replaced = f.before + inner + f.after;
      area.value = text.slice(0, start) + replaced + text.slice(end);
      selStart = start + f.before.length;
      selEnd = selStart + inner.length;
    }
    area.focus();
    area.setSelectionRange(selStart, selEnd);
    area.dispatchEvent(new Event("input", { bubbles: true }));
  }

  // "Quote" under each reply: puts the selected part of it (or all of it) into the reply
  // box as a Markdown quote.
  function setupQuotes() {
    var box = document.querySelector("form .editor textarea[name=body]");
    var replies = document.querySelectorAll("article.reply:not(.hidden-reply)");
    if (!box || !replies.length || !box.closest("form").querySelector("[type=submit]")) {
      return;
    }
    Array.prototype.forEach.call(replies, function (reply) {
      var prose = reply.querySelector(":scope > .prose");
      if (!prose) { return; }
      var b = document.createElement("button");
      b.type = "button";
      b.className = "link quote-reply";
      b.textContent = "Quote";
      var who = reply.querySelector(".meta");
      b.setAttribute("aria-label", "Quote this reply" +
                     (who ? " (" + who.textContent.split("·")[0].trim() + ")" : ""));
      b.addEventListener("click", function () {
        var sel = window.getSelection ? String(window.getSelection()) : "";
        var inReply = sel && window.getSelection().anchorNode &&
          prose.contains(window.getSelection().anchorNode);
        var text = (inReply ? sel : prose.innerText).trim();
        if (!text) { return; }
        var quote = text.split("\n").map(function (l) { return "> " + l; }).join("\n");
        var pos = box.selectionStart;
        var value = box.value;
        var lead = pos > 0 && value.charAt(pos - 1) !== "\n" ? "\n\n" : "";
        var insert = lead + quote + "\n\n";
        var writeTab = box.closest(".editor").querySelector(".editor-tab");
        if (box.hidden && writeTab) { writeTab.click(); }
        box.value = value.slice(0, pos) + insert + value.slice(pos);
        box.focus();
        box.setSelectionRange(pos + insert.length, pos + insert.length);
        box.scrollIntoView({ block: "center" });
      });
      prose.parentNode.insertBefore(b, prose.nextSibling);
    });
  }

  // @mention suggestions (data-mentions-url): after "@" and a letter or two, the server
  // lists people who can read this finding (nobody else); arrows choose, Enter or Tab
  // inserts, Escape closes.
  function setupMentions(area, url, n) {
    var list = document.createElement("ul");
    list.className = "mention-list";
    list.id = n + "-mentions";
    list.setAttribute("role", "listbox");
    list.setAttribute("aria-label", "People who can read this finding");
    list.hidden = true;
    area.parentNode.insertBefore(list, area.nextSibling);
    area.setAttribute("aria-autocomplete", "list");
    area.setAttribute("aria-controls", list.id);
    var timer = null;
    var items = [];
    var active = -1;
    var seq = 0;

    function word() {
      var upto = area.value.slice(0, area.selectionStart);
      var m = /(^|[^\w@.\/+-])@([A-Za-z0-9][A-Za-z0-9_.-]{0,38})$/.exec(upto);
      return m ? { prefix: m[2], start: upto.length - m[2].length } : null;
    }

    function close() {
      list.hidden = true;
      list.textContent = "";
      items = [];
      active = -1;
      area.removeAttribute("aria-activedescendant");
      area.setAttribute("aria-expanded", "false");
    }

    function mark() {
      var options = list.children;
      for (var i = 0; i < options.length; i += 1) {
        options[i].setAttribute("aria-selected", i === active ? "true" : "false");
      }
      if (active >= 0) { area.setAttribute("aria-activedescendant", list.id + "-" + active); }
    }

    function choose(i) {
      var w = word();
      if (!w || !items[i]) { close(); return; }
      var before = area.value.slice(0, w.start);
      var after = area.value.slice(area.selectionStart);
      var insert = items[i].username + " ";
      area.value = before + insert + after;
      var pos = before.length + insert.length;
      area.setSelectionRange(pos, pos);
      close();
      area.focus();
    }

    function render(people) {
      list.textContent = "";
      items = people;
      active = people.length ? 0 : -1;
      people.forEach(function (person, i) {
        var li = document.createElement("li");
        li.id = list.id + "-" + i;
        li.setAttribute("role", "option");
        var handle = document.createElement("strong");
        handle.textContent = "@" + person.username;
        li.appendChild(handle);
        li.appendChild(document.createTextNode(" " + person.name));
        li.addEventListener("mousedown", function (e) { e.preventDefault(); choose(i); });
        list.appendChild(li);
      });
      list.hidden = !people.length;
      area.setAttribute("aria-expanded", people.length ? "true" : "false");
      mark();
    }

    area.addEventListener("input", function () {
      clearTimeout(timer);
      var w = word();
      if (!w) { close(); return; }
      timer = setTimeout(function () {
        var mine = ++seq;
        fetch(url + "?q=" + encodeURIComponent(w.prefix), {
          credentials: "same-origin", headers: { "Accept": "application/json" }
        }).then(function (r) { return r.ok ? r.json() : { people: [] }; })
          .then(function (data) { if (mine === seq) { render(data.people || []); } })
          .catch(close);
      }, 150);
    });
    area.addEventListener("keydown", function (e) {
      if (list.hidden || !items.length) { return; }
      if (e.key === "ArrowDown") {
        active = (active + 1) % items.length; mark(); e.preventDefault();
      } else if (e.key === "ArrowUp") {
        active = (active - 1 + items.length) % items.length; mark(); e.preventDefault();
      } else if (e.key === "Enter" || e.key === "Tab") {
        e.preventDefault(); choose(active);
      } else if (e.key === "Escape") {
        close();
      }
    });
    area.addEventListener("blur", function () { setTimeout(close, 150); });
  }

  var mentionEditors = document.querySelectorAll(".editor[data-mentions-url]");
  for (var j = 0; j < mentionEditors.length; j += 1) {
    var box = mentionEditors[j].querySelector("textarea");
    if (box) {
      setupMentions(box, mentionEditors[j].getAttribute("data-mentions-url"),
                    box.id || "editor" + j);
    }
  }

  var editors = document.querySelectorAll(".editor[data-preview-url]");
  for (var i = 0; i < editors.length; i += 1) { setup(editors[i]); }
  setupQuotes();
}());
