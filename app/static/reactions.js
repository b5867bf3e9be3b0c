// Responses without a reload: the same form post as without JavaScript, asking for the
// new counts as JSON. On any failure the form is sent the ordinary way.
"use strict";
(function () {
  function update(form, responses) {
    var box = form.closest(".responses");
    responses.forEach(function (t) {
      var button = form.querySelector('button[value="' + t.kind + '"]');
      if (!button) { return; }
      button.setAttribute("aria-pressed", t.mine ? "true" : "false");
      button.classList.toggle("mine", t.mine);
      button.querySelector("[data-count]").textContent = String(t.count);
    });
    var details = box.querySelector(".responders");
    var list = details.querySelector("ul");
    list.textContent = "";
    var total = 0;
    responses.forEach(function (t) {
      total += t.count;
      if (!t.count) { return; }
      var item = document.createElement("li");
      var label = document.createElement("strong");
      label.textContent = t.label + ":";
      item.appendChild(label);
      var text = " " + t.people.map(function (u, i) {
        return t.names[i] + " (@" + u + ")";
      }).join(", ");
      if (t.others) {
        text += (t.people.length ? " and " : "") + t.others + " " +
          (t.people.length ? "other" : "member") + (t.others > 1 ? "s" : "") + " you cannot see";
      }
      item.appendChild(document.createTextNode(text));
      list.appendChild(item);
    });
    details.hidden = total === 0;
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-responses]") || !event.submitter) { return; }
    event.preventDefault();
    var data = new FormData(form);
    data.set("kind", event.submitter.value);
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.action, {method: "POST", body: data, credentials: "same-origin",
                        headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.json();
      })
      .then(function (body) {
        buttons.forEach(function (b) { b.disabled = false; });
        update(form, body.responses);
        event.submitter.focus();
      })
      .catch(function () {
        buttons.forEach(function (b) { b.disabled = false; });
        var input = document.createElement("input");
        input.type = "hidden";
        input.name = "kind";
        input.value = event.submitter.value;
        form.appendChild(input);
        form.submit();
      });
  });
}());
