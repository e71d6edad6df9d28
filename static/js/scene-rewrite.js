/*
 * "Rewrite this scene" on the story page, over the /ws/generate/ WebSocket (the regenerate_scene
 * message): the new scene streams in under its form, with a Cancel button, and once it is saved the
 * page opens the new version. Without JavaScript or WebSocket the form posts as before.
 *
 * Text from the model and from the server is inserted with textContent only, never as HTML.
 */
(function () {
  "use strict";

  if (!("WebSocket" in window)) {
    return;
  }

  Array.prototype.forEach.call(document.querySelectorAll("form.scene-rewrite-form"), function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      rewrite(form);
    });
  });

  function rewrite(form) {
    var button = form.querySelector("button[type=submit]");
    var input = form.querySelector("input[name=instructions]");
    var cancel = form.querySelector(".rewrite-cancel");

    function focusLost() {
      var active = document.activeElement;
      return !active || active === document.body || active === button || active === input || active === cancel;
    }

    var status = form.querySelector(".rewrite-status");
    var stream = form.querySelector(".rewrite-stream");
    var request = {
      type: "regenerate_scene",
      story_id: Number(form.dataset.story),
      version: Number(form.dataset.version),
      index: Number(form.dataset.index),
    };
    // The latest version this page knows: a newer one (another tab) is refused as a conflict.
    var base = form.querySelector("input[name=base_version]");
    if (base && /^[1-9][0-9]*$/.test(base.value)) {
      request.base_version = Number(base.value);
    }
    if (input.value.trim()) {
      request.instructions = input.value;
    }
    var scene = request.index + 1;
    var finished = false;
    // The submit button a keyboard or screen-reader user pressed is disabled, and Cancel hidden at the
    // end, which drops focus to the page's top: it goes on to Cancel, then back to the submit button.
    var focusFollows = focusLost();
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    var socket = new WebSocket(scheme + "//" + window.location.host + form.dataset.wsPath);

    function finish(text) {
      finished = true;
      status.textContent = text;
      button.disabled = false;
      input.disabled = false;
      cancel.hidden = true;
      if (focusFollows && focusLost()) {
        button.focus();
      }
      if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
        socket.close(1000);
      }
    }

    // Signed out meanwhile: a sign-in in a new tab keeps the instructions typed here (leaving the page
    // for the login lost them), and the same button then works, the socket opened anew with the session.
    function signInOffer() {
      var link = document.createElement("a");
      link.href = form.dataset.loginUrl;
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = "Sign in again";
      status.appendChild(document.createTextNode(". "));
      status.appendChild(link);
      status.appendChild(
        document.createTextNode(" (a new tab opens; your instructions stay here), then press the button again.")
      );
    }

    button.disabled = true;
    input.disabled = true;
    cancel.hidden = false;
    stream.textContent = "";
    stream.hidden = false;
    status.textContent = "Rewriting scene " + scene + "…";
    if (focusFollows) {
      cancel.focus();
    }
    var cancelAsked = false;
    cancel.onclick = function () {
      if (finished || cancelAsked) {
        return;
      }
      cancelAsked = true;
      status.textContent = "Cancelling…";
      if (socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({ type: "cancel" }));
      }
      // Still connecting: the request is never sent (see "open"), so nothing starts.
    };
    var opened = false;
    socket.addEventListener("open", function () {
      opened = true;
      if (cancelAsked) {
        finish("Cancelled: nothing was saved.");
        return;
      }
      socket.send(JSON.stringify(request));
    });
    socket.addEventListener("message", function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (!message || typeof message !== "object" || finished) {
        return;
      }
      if (message.type === "scene_delta" && typeof message.text === "string") {
        stream.textContent += message.text;
      } else if (message.type === "scene_retry") {
        stream.textContent = "";
        status.textContent = "Scene " + scene + ": trying again…";
      } else if (message.type === "saved" && typeof message.version === "number") {
        finished = true;
        status.textContent = "Scene " + scene + " rewritten: this is version " + message.version + ". Opening it…";
        window.location.assign(form.dataset.storyUrl + "?version=" + message.version);
      } else if (message.type === "error") {
        finish("The scene could not be rewritten: " + String(message.message || message.code || "an error"));
        if (message.code === "unauthenticated") {
          signInOffer();
        }
      } else if (message.type === "cancelled") {
        finish("Cancelled: nothing was saved.");
      }
    });
    socket.addEventListener("close", function () {
      if (finished) {
        return;
      }
      if (!opened) {
        // The request was never sent: nothing started.
        finish(cancelAsked ? "Cancelled: nothing was saved." : "The server could not be reached; nothing was started.");
        return;
      }
      // The rewrite is a run of its own: it goes on without this page and is saved (issue 16).
      finish("The connection closed; the rewrite goes on without this page. Reload to see the new version.");
    });
  }
})();
