// Attachments on the finding page: drag and drop or pick several files; each is sent
// as the raw request body (no form encoding, so the server can stream-encrypt it) with
// a progress bar. Files go one after another; the page reloads when all are done.
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
      row.li.classList.add("upload-failed");
      row.bar.value = 0;
      row.status.textContent = message;
    }

    function next() {
      if (busy) { return; }
      var item = queue.shift();
      if (!item) {
        if (uploaded > 0) { window.location.reload(); }
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

    function addFiles(files) {
      for (var i = 0; i < files.length; i += 1) {
        var file = files[i];
        var row = addRow(file);
        if (file.size === 0) { fail(row, "the file is empty (folders cannot be uploaded)"); continue; }
        if (file.size > maxBytes) { fail(row, "larger than " + limitText); continue; }
        queue.push({ file: file, row: row });
      }
      next();
    }

    input.addEventListener("change", function () {
      addFiles(input.files);
      input.value = "";
    });
    zone.addEventListener("dragover", function (e) {
      e.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", function () { zone.classList.remove("dragging"); });
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
