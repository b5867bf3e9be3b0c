// Attachments on the finding page: drag and drop or pick several files; each is sent
// as the raw request body (no form encoding, so the server can stream-encrypt it) with
// a progress bar. Files go one after another. When all are stored the page reloads to
// list them; when some were refused it stays, so their messages remain readable, and
// offers to refresh the list.
(function () {
  "use strict";

  function formatSize(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function setupZone(zone) {
    var url = zone.getAttribute("data-upload-url");
    var csrf = zone.getAttribute("data-csrf");
    var maxBytes = parseInt(zone.getAttribute("data-max-bytes"), 10);
    var limitText = zone.getAttribute("data-limit-text");
    var input = zone.querySelector(".upload-input");
    var queueList = zone.querySelector(".upload-queue");
    var queue = [];
    var busy = false;
    var uploaded = 0;
    var failed = 0;

    function addRow(file) {
      var li = document.createElement("li");
      var name = document.createElement("span");
      name.className = "upload-name";
      name.textContent = file.name + " (" + formatSize(file.size) + ")";
      var bar = document.createElement("progress");
      bar.max = 100;
      bar.value = 0;
      var status = document.createElement("span");
      status.className = "upload-status";
      status.textContent = "waiting";
      li.appendChild(name);
      li.appendChild(bar);
      li.appendChild(status);
      queueList.appendChild(li);
      return { li: li, bar: bar, status: status };
    }

    function fail(row, message) {
      failed += 1;
      row.li.classList.add("upload-failed");
      row.bar.value = 0;
      row.status.textContent = message;
    }

    function next() {
      if (busy) { return; }
      var item = queue.shift();
      if (!item) {
        if (uploaded > 0 && failed === 0) { window.location.reload(); } else if (uploaded > 0) { summarize(); }
        return;
      }
      busy = true;
      var xhr = new XMLHttpRequest();
      xhr.open("POST", url + "?filename=" + encodeURIComponent(item.file.name));
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      if (item.file.type) { xhr.setRequestHeader("X-Upload-Content-Type", item.file.type); }
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          item.row.bar.value = Math.floor((e.loaded / e.total) * 100);
          item.row.status.textContent = formatSize(e.loaded) + " of " + formatSize(e.total);
        }
      });
      xhr.addEventListener("load", function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
        if (xhr.status === 201 && body) {
          uploaded += 1;
          item.row.bar.value = 100;
          item.row.li.classList.add("upload-done");
          item.row.status.textContent = "encrypted and stored · SHA-256 " + body.sha256;
        } else if (body && body.error) {
          fail(item.row, body.error.message);
        } else {
          fail(item.row, "failed (HTTP " + xhr.status + "); reload the page and sign in again");
        }
        busy = false;
        next();
      });
      xhr.addEventListener("error", function () {
        fail(item.row, "the connection broke; nothing was stored");
        busy = false;
        next();
      });
      item.row.status.textContent = "uploading";
      xhr.send(item.file);
    }

    // Some files stored, some refused: say so and let the user refresh the list when
    // they have read why.
    function summarize() {
      var old = zone.querySelector(".upload-summary");
      if (old) { old.parentNode.removeChild(old); }
      var p = document.createElement("p");
      p.className = "upload-summary";
      p.setAttribute("role", "status");
      p.textContent = uploaded + " stored, " + failed + " not stored (see above). ";
      var button = document.createElement("button");
      button.type = "button";
      button.className = "secondary";
      button.textContent = "Show the stored files";
      button.addEventListener("click", function () { window.location.reload(); });
      p.appendChild(button);
      zone.appendChild(p);
    }

    function addFiles(files) {
      for (var i = 0; i < files.length; i += 1) {
        var file = files[i];
        var row = addRow(file);
        if (file.size === 0) { fail(row, "the file is empty (folders cannot be uploaded)"); continue; }
        if (file.size > maxBytes) { fail(row, "The file is larger than " + limitText + "; it was not sent."); continue; }
        queue.push({ file: file, row: row });
      }
      next();
    }

    input.addEventListener("change", function () {
      addFiles(input.files);
      input.value = "";
    });
    // Cancelling dragenter and dragover makes the zone a drop target (HTML drag and drop).
    function over(e) {
      e.preventDefault();
      if (e.dataTransfer) { e.dataTransfer.dropEffect = "copy"; }
      zone.classList.add("dragging");
    }
    zone.addEventListener("dragenter", over);
    zone.addEventListener("dragover", over);
    zone.addEventListener("dragleave", function (e) {
      // Moving onto a child of the zone is not leaving it.
      if (e.relatedTarget && zone.contains(e.relatedTarget)) { return; }
      zone.classList.remove("dragging");
    });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      zone.classList.remove("dragging");
      if (e.dataTransfer && e.dataTransfer.files) { addFiles(e.dataTransfer.files); }
    });
  }

  function setupConfirm(form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".upload-zone").forEach(setupZone);
    document.querySelectorAll(".attachments form[data-confirm]").forEach(setupConfirm);
  });
})();
