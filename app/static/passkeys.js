// Passkeys (WebAuthn): adding one, and signing in or confirming with one.
// The server sends the options as JSON and checks the answer; this file only moves them
// between the page, the browser's WebAuthn API and the server (CSRF header included).
(function () {
  "use strict";

  function b64urlToBuf(value) {
    var s = value.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }

  function bufToB64url(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(json) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    json.challenge = b64urlToBuf(json.challenge);
    json.user.id = b64urlToBuf(json.user.id);
    (json.excludeCredentials || []).forEach(function (c) { c.id = b64urlToBuf(c.id); });
    return json;
  }

  function requestOptions(json) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    json.challenge = b64urlToBuf(json.challenge);
    (json.allowCredentials || []).forEach(function (c) { c.id = b64urlToBuf(c.id); });
    return json;
  }

  function credentialJSON(cred) {
    if (typeof cred.toJSON === "function") { return cred.toJSON(); }
    var r = cred.response, out = {
      id: cred.id, rawId: bufToB64url(cred.rawId), type: cred.type,
      clientExtensionResults: cred.getClientExtensionResults(),
      authenticatorAttachment: cred.authenticatorAttachment, response: {
        clientDataJSON: bufToB64url(r.clientDataJSON)
      }
    };
    if (r.attestationObject) {
      out.response.attestationObject = bufToB64url(r.attestationObject);
      out.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      out.response.authenticatorData = bufToB64url(r.authenticatorData);
      out.response.signature = bufToB64url(r.signature);
      if (r.userHandle) { out.response.userHandle = bufToB64url(r.userHandle); }
    }
    return out;
  }

  function post(url, csrf, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf,
                "Accept": "application/json"},
      body: JSON.stringify(body)
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (data) {
        if (!res.ok) {
          var err = new Error((data.error && data.error.message) ||
                              "The server refused the request (" + res.status + ").");
          err.server = true;
          throw err;
        }
        return data;
      });
    });
  }

  function say(el, text, kind) {
    if (!el) { return; }
    el.textContent = text;
    el.className = "flash flash-" + (kind || "info");
    el.hidden = false;
  }

  function browserMessage(err) {
    if (err.server) { return err.message; }
    if (err.name === "NotAllowedError") {
      return "The passkey request was cancelled or timed out. Try again.";
    }
    if (err.name === "InvalidStateError") {
      return "This authenticator already holds a passkey for your account.";
    }
    if (err.name === "SecurityError") {
      return "Passkeys work only at this site's own address (" + location.origin +
             " is not it).";
    }
    return "The passkey request failed: " + (err.message || err.name);
  }

  function csrfToken(el) {
    var field = (el.closest("form") || document).querySelector("input[name=csrf_token]") ||
                document.querySelector("input[name=csrf_token]");
    return el.getAttribute("data-csrf") || (field ? field.value : "");
  }

  function supported(status) {
    if (window.PublicKeyCredential && navigator.credentials) { return true; }
    say(status, "This browser does not support passkeys.", "error");
    return false;
  }

  document.querySelectorAll("form[data-passkey-register]").forEach(function (form) {
    var status = document.getElementById(form.getAttribute("data-status"));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (!supported(status)) { return; }
      var csrf = csrfToken(form);
      var name = form.querySelector("[name=name]").value;
      var button = form.querySelector("button");
      button.disabled = true;
      say(status, "Follow your browser's prompt to create the passkey…", "info");
      post(form.getAttribute("data-options-url"), csrf, {name: name})
        .then(function (options) {
          return navigator.credentials.create({publicKey: creationOptions(options)});
        })
        .then(function (cred) {
          return post(form.getAttribute("action"), csrf,
                      {name: name, credential: credentialJSON(cred)});
        })
        .then(function (data) { window.location.assign(data.redirect); })
        .catch(function (err) { say(status, browserMessage(err), "error"); })
        .then(function () { button.disabled = false; });
    });
  });

  document.querySelectorAll("button[data-passkey-assert]").forEach(function (button) {
    var status = document.getElementById(button.getAttribute("data-status"));
    button.hidden = false;
    button.addEventListener("click", function (ev) {
      ev.preventDefault();
      if (!supported(status)) { return; }
      var csrf = csrfToken(button);
      var purpose = button.getAttribute("data-purpose");
      button.disabled = true;
      say(status, "Follow your browser's prompt to use your passkey…", "info");
      post(button.getAttribute("data-options-url"), csrf, {purpose: purpose})
        .then(function (options) {
          return navigator.credentials.get({publicKey: requestOptions(options)});
        })
        .then(function (cred) {
          return post(button.getAttribute("data-verify-url"), csrf, {
            purpose: purpose, credential: credentialJSON(cred),
            next: button.getAttribute("data-next") || ""
          });
        })
        .then(function (data) { window.location.assign(data.redirect); })
        .catch(function (err) { say(status, browserMessage(err), "error"); })
        .then(function () { button.disabled = false; });
    });
  });
})();
