/*
 * The screenplay editor: Fountain on the left, the story page's rendering on the right.
 *
 * The preview is the server's: the text is posted (debounced) to the story's preview endpoint, which
 * reads it exactly as a save does and renders it with the story page's own template, escaped there;
 * this script only places that HTML. Errors (which name the line) are shown with textContent.
 * Saving posts to the REST API with the version the editor opened as base_version: a 409 means
 * another version was saved since, and the writer chooses to save anyway or to reload (asked first, the
 * text kept as the draft of the version it started from); the text stays.
 * Unsaved text is kept in localStorage per story and starting version, so a reload loses nothing, and
 * leaving the page with unsaved changes asks first.
 */
(function () {
  "use strict";

  var configNode = document.getElementById("editor-config");
  var form = document.getElementById("editor");
  if (!configNode || !form) {
    return;
  }
  var config = JSON.parse(configNode.textContent);
  var textarea = document.getElementById("fountain");
  var preview = document.getElementById("preview");
  var previewStatus = form.querySelector(".preview-status");
  var previewAnnouncer = form.querySelector(".preview-announcer");
  var errorBox = form.querySelector(".editor-error");
  var conflict = form.querySelector(".editor-conflict");
  var draftNote = form.querySelector(".draft-note");
  var servedCsrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var original = textarea.value;
  var draftKey = "screenplay-draft:" + config.storyId + ":" + config.baseVersion;
  var previewTimer = null;
  var draftTimer = null;
  var previewSeq = 0;
  var leaving = false;

  function dirty() {
    return textarea.value !== original;
  }

  // A text past STORY_IMPORT_MAX_BYTES is refused here, in the server's own words
  // (stories.imports.import_too_large), and not sent: past the API's body limit a save answered the
  // same in other words ("The request body is larger than ..."), and either way it cannot be read.
  var encoder = "TextEncoder" in window ? new TextEncoder() : null;
  function sizeProblem() {
    if (!encoder || textarea.value.length <= config.maxBytes / 3) {
      return ""; // At most 3 bytes of UTF-8 per UTF-16 unit: within the limit without counting.
    }
    var size = encoder.encode(textarea.value).length;
    return size > config.maxBytes
      ? "the text is " + size + " bytes; the limit is " + config.maxBytes + " bytes (STORY_IMPORT_MAX_BYTES)"
      : "";
  }

  function csrfToken() {
    return window.csrfTokenFromCookie(config.csrfCookie, servedCsrf);
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().then(
        function (data) { return { status: response.status, data: data }; },
        function () { return { status: response.status, data: {} }; }
      );
    });
  }

  // What a failed request says: our errors' message, DRF's detail, or the first field error that DRF's
  // serializers answer with ({"fountain": ["This field may not be blank."]}).
  function errorMessage(data, fallback) {
    if (data.message || data.error || data.detail) {
      return data.message || data.error || data.detail;
    }
    for (var field in data) {
      if (Array.isArray(data[field]) && typeof data[field][0] === "string") {
        return data[field][0];
      }
    }
    return fallback;
  }

  // The error is about the text: the text area is marked and described by it while it shows. The same
  // error again (each preview while the writer types on) is left as it is: rewritten, the alert was read
  // out again at every pause in the typing.
  function showError(message) {
    if (errorBox.textContent !== message) {
      errorBox.textContent = message;
    }
    errorBox.hidden = !message;
    if (message) {
      textarea.setAttribute("aria-invalid", "true");
      textarea.setAttribute("aria-describedby", errorBox.id);
    } else {
      textarea.removeAttribute("aria-invalid");
      textarea.removeAttribute("aria-describedby");
    }
  }

  // The preview's state as the page shows it; a screen reader hears only a change of outcome (not
  // "Updating…, Up to date" at every pause in the typing): back up to date, or offline. An error is
  // the error box's alert.
  var previewOutcome = "Up to date";

  function previewStatusShow(text, outcome) {
    previewStatus.textContent = text;
    if (!outcome || outcome === previewOutcome) {
      return;
    }
    previewOutcome = outcome;
    previewAnnouncer.textContent = outcome === "Not updated" ? "" : "Preview: " + text;
  }

  function refreshPreview() {
    var seq = ++previewSeq;
    var tooLarge = sizeProblem();
    if (tooLarge) {
      preview.classList.add("stale");
      previewStatusShow("Not updated", "Not updated");
      showError(tooLarge);
      return;
    }
    preview.classList.add("stale");
    previewStatusShow("Updating…");
    post(config.previewUrl, { fountain: textarea.value, base_version: config.baseVersion }).then(
      function (result) {
        if (seq !== previewSeq) {
          return; // A newer preview is on its way.
        }
        preview.classList.remove("stale");
        if (result.status === 200) {
          preview.innerHTML = result.data.html; // Rendered and escaped by the server's template.
          previewStatusShow("Up to date", "Up to date");
          showError("");
        } else {
          previewStatusShow("Not updated", "Not updated");
          showError(result.status === 404 ? config.storyGone : errorMessage(result.data, "The preview could not be made."));
        }
      },
      function () {
        if (seq === previewSeq) {
          previewStatusShow("Offline: the preview could not be updated", "Offline");
        }
      }
    );
  }

  // Whether the text is now kept (or there was nothing to keep).
  function storeDraft() {
    try {
      if (dirty()) {
        localStorage.setItem(draftKey, JSON.stringify({ text: textarea.value, at: Date.now() }));
      } else {
        localStorage.removeItem(draftKey);
      }
      return true;
    } catch (e) {
      // Storage full or disabled: the editor still works, only reload recovery is lost.
      return false;
    }
  }

  function forgetDraft() {
    try {
      localStorage.removeItem(draftKey);
    } catch (e) {
      // Nothing to forget.
    }
  }

  function restoreDraft() {
    var saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(draftKey) || "null");
    } catch (e) {
      saved = null;
    }
    if (saved && typeof saved.text === "string" && saved.text !== original) {
      textarea.value = saved.text;
      draftNote.hidden = false;
      refreshPreview();
    }
  }

  function save(anyway) {
    // Always from the version this editor opened: saved anyway, its characters (personas,
    // descriptions) are still that version's, as the preview showed, not the newer version's.
    var body = { fountain: textarea.value, base_version: config.baseVersion };
    if (anyway) {
      body.save_anyway = true;
    }
    var button = form.querySelector("button[type=submit]");
    // The button pressed (Save, or Save anyway, which hides itself) loses focus to the page's top while
    // the save runs; a save that fails puts it back on Save, where a keyboard user can try again.
    var active = document.activeElement;
    var focusFollows = !active || active === document.body || active === button || conflict.contains(active);
    function saveEnded() {
      button.disabled = false;
      if (focusFollows && (!document.activeElement || document.activeElement === document.body)) {
        button.focus();
      }
    }
    var tooLarge = sizeProblem();
    if (tooLarge) {
      showError(tooLarge);
      return;
    }
    button.disabled = true;
    showError("");
    post(config.saveUrl, body).then(
      function (result) {
        saveEnded();
        if (result.status === 201) {
          forgetDraft();
          leaving = true;
          window.location.assign(config.storyUrl + "?version=" + result.data.number);
        } else if (result.status === 409) {
          // An editor opened on an older version conflicts with versions that were there before it.
          var why = config.baseVersion < config.latestVersion
            ? "This editor started from version " + config.baseVersion + ", not the latest (version " +
              config.latestVersion + " when it opened): "
            : "Another version was saved since this editor opened: ";
          conflict.querySelector(".conflict-message").textContent = why + (result.data.message || "") + ".";
          conflict.hidden = false;
          conflict.querySelector(".conflict-save").focus();
        } else if (result.status === 401) {
          showError(config.signedOut);
        } else if (result.status === 404) {
          showError(config.storyGone);
        } else {
          showError(errorMessage(result.data, "The version could not be saved."));
        }
      },
      function () {
        saveEnded();
        showError("The server could not be reached; your text is kept here and in this browser.");
      }
    );
  }

  textarea.addEventListener("input", function () {
    clearTimeout(previewTimer);
    clearTimeout(draftTimer);
    previewTimer = setTimeout(refreshPreview, 400);
    draftTimer = setTimeout(storeDraft, 300);
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    storeDraft();
    save(false);
  });

  conflict.querySelector(".conflict-save").addEventListener("click", function () {
    conflict.hidden = true;
    save(true);
  });

  // The writer's text stays this version's draft (it was forgotten here, and lost): opening this
  // version's editor again offers it back, as after any reload. Leaving with changes asks first.
  conflict.querySelector(".conflict-reload").addEventListener("click", function () {
    if (dirty()) {
      var kept = storeDraft()
        ? "Your text stays in this browser as a draft of version " + config.baseVersion +
          ": opening version " + config.baseVersion + " in the editor again brings it back."
        : "This browser cannot keep your text: it will be lost.";
      if (!window.confirm("Open the latest version in the editor? " + kept)) {
        return;
      }
    }
    leaving = true;
    window.location.assign(config.latestEditUrl);
  });

  draftNote.querySelector(".draft-discard").addEventListener("click", function () {
    forgetDraft();
    textarea.value = original;
    draftNote.hidden = true;
    // The button pressed went with its note, which dropped keyboard focus to the page's top.
    textarea.focus();
    refreshPreview();
  });

  window.addEventListener("beforeunload", function (event) {
    if (!leaving && dirty()) {
      storeDraft();
      event.preventDefault();
      event.returnValue = "";
    }
  });

  restoreDraft();
})();
