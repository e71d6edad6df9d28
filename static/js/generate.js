/*
 * The generation form: persona picker with context previews, plot editor, and the live stream of a
 * screenplay over the /ws/generate/ WebSocket (protocol in docs/protocol.md).
 *
 * A run outlives the socket (docs/protocol.md, "Runs and their addresses"): once accepted, the run's id
 * goes into the address bar (?run=<id>), so a reload attaches to it again and redraws every event so
 * far; a dropped socket reconnects by itself with backoff and attaches after the last seq it showed.
 * Events carry their seq, and one already shown is never drawn twice.
 *
 * Every piece of text that comes from a user, an editor or the model is inserted with textContent or
 * text nodes, never as HTML. Configuration arrives through the #generator-config json_script block, so
 * the page needs no inline script (the Content-Security-Policy forbids them).
 */
(function () {
  "use strict";

  var configNode = document.getElementById("generator-config");
  var form = document.getElementById("generator");
  if (!configNode || !form) {
    return;
  }
  var config = JSON.parse(configNode.textContent);

  function byId(id) {
    return document.getElementById(id);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    return node;
  }

  function asText(value) {
    return typeof value === "string" ? value : value === undefined || value === null ? "" : String(value);
  }

  var ui = {
    search: byId("persona-search"),
    results: byId("persona-results"),
    resultsStatus: byId("persona-results-status"),
    selected: byId("persona-selected"),
    selectedEmpty: byId("persona-selected-empty"),
    plot: byId("plot"),
    plotCount: byId("plot-count"),
    title: byId("title"),
    model: byId("model"),
    mode: byId("mode"),
    maxTokens: byId("max-tokens"),
    formError: byId("form-error"),
    generate: byId("generate"),
    stream: byId("stream"),
    progress: byId("stream-progress"),
    stats: byId("stream-stats"),
    cancel: byId("cancel"),
    error: byId("stream-error"),
    errorMessage: byId("stream-error-message"),
    retry: byId("retry"),
    signIn: byId("stream-sign-in"),
    saved: byId("stream-saved"),
    savedLink: byId("saved-link"),
    castDropped: byId("stream-cast-dropped"),
    scenes: byId("stream-scenes"),
    writing: byId("stream-writing"),
    raw: byId("stream-raw"),
    rawAll: byId("stream-raw-all"),
    rawDetails: byId("stream-raw-details"),
    announcer: byId("announcer"),
    alertAnnouncer: byId("alert-announcer"),
  };

  function announce(text) {
    if (run && run.replaying) {
      // A replay (a reload, a reconnect) comes as a burst: each announcement would cut the last, and
      // only the last was heard. What the run says is kept, and said once the replay is over.
      run.replayHeard = text;
      return;
    }
    ui.announcer.textContent = text;
  }

  function announceAlert(text) {
    ui.alertAnnouncer.textContent = text;
  }

  var invalidField = null; // the field the form's error is about, marked for assistive technology

  // The error names its field to a screen reader (aria-invalid, and the error as its description) and
  // keyboard focus goes there, where the writer has to fix it; the alert alone left focus on Generate.
  function showFormError(text, field) {
    ui.formError.textContent = text;
    ui.formError.hidden = !text;
    if (invalidField) {
      invalidField.removeAttribute("aria-invalid");
      describedBy(invalidField, ui.formError.id, false);
      invalidField = null;
    }
    if (text && field) {
      invalidField = field;
      field.setAttribute("aria-invalid", "true");
      describedBy(field, ui.formError.id, true);
      field.focus();
    }
  }

  function describedBy(field, id, on) {
    var ids = (field.getAttribute("aria-describedby") || "").split(/\s+/).filter(function (each) {
      return each && each !== id;
    });
    if (on) {
      ids.push(id);
    }
    if (ids.length) {
      field.setAttribute("aria-describedby", ids.join(" "));
    } else {
      field.removeAttribute("aria-describedby");
    }
  }

  /* ---------------------------------------------------------------- persona contexts (cached) */

  // Contexts are cached for the browser session: re-selecting a persona costs no request.
  var CACHE_PREFIX = "persona-context:";

  function contextCached(name) {
    try {
      var raw = window.sessionStorage.getItem(CACHE_PREFIX + name);
      return raw ? JSON.parse(raw) : null;
    } catch (error) {
      return null;
    }
  }

  function contextStore(context) {
    try {
      window.sessionStorage.setItem(CACHE_PREFIX + context.name, JSON.stringify(context));
    } catch (error) {
      // A full or disabled storage only costs a request next time.
    }
  }

  // Names selected in the same tick are fetched in one batch request.
  var pendingNames = [];
  var flushScheduled = false;

  function contextRequest(name) {
    var cached = contextCached(name);
    if (cached) {
      contextShow(cached);
      return;
    }
    if (pendingNames.indexOf(name) === -1) {
      pendingNames.push(name);
    }
    if (!flushScheduled) {
      flushScheduled = true;
      window.setTimeout(contextsFlush, 0);
    }
  }

  function contextsFlush() {
    flushScheduled = false;
    var names = pendingNames;
    pendingNames = [];
    if (!names.length) {
      return;
    }
    var url = config.contextsUrl + "?names=" + encodeURIComponent(names.join(","));
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        (data.contexts || []).forEach(function (context) {
          contextStore(context);
          contextShow(context);
        });
        (data.missing || []).forEach(function (name) {
          contextProblem(name, "This persona does not exist any more.");
        });
        (data.inactive || []).forEach(function (name) {
          contextProblem(name, "This persona has been deactivated.");
        });
      })
      .catch(function () {
        names.forEach(function (name) {
          contextProblem(name, "The context preview could not be loaded.");
        });
      });
  }

  /* ---------------------------------------------------------------- persona picker */

  var selected = new Map(); // name -> {name, display_name, chip, preview, meta}

  function personaSelect(persona) {
    if (selected.has(persona.name)) {
      return;
    }
    if (selected.size >= config.maxPersonas) {
      showFormError("A story can have at most " + config.maxPersonas + " personas.");
      return;
    }
    showFormError("");
    var chip = el("li", "persona-chip");
    chip.dataset.name = persona.name;
    var head = el("div", "persona-chip-head");
    var label = el("strong", "persona-chip-name", persona.display_name || persona.name);
    var remove = el("button", "persona-remove", "Remove");
    remove.type = "button";
    remove.setAttribute("aria-label", "Remove " + (persona.display_name || persona.name));
    remove.addEventListener("click", function () {
      // The pressed button goes with its chip, which dropped focus to the page's top: it moves to the
      // next chip's Remove (else the previous one's, else the search) before the chip goes.
      var hadFocus = document.activeElement === remove;
      var neighbour = chip.nextElementSibling || chip.previousElementSibling;
      personaDeselect(persona.name);
      if (hadFocus) {
        (neighbour ? neighbour.querySelector(".persona-remove") : ui.search).focus();
      }
    });
    head.appendChild(label);
    head.appendChild(remove);
    var preview = el("pre", "context-preview", "Loading context…");
    // A box that scrolls: without a tab stop a keyboard user could not scroll to the rest of it. A
    // region, for its name to be read: a <pre>'s own role takes none.
    preview.setAttribute("role", "region");
    preview.setAttribute("aria-label", "Context of " + (persona.display_name || persona.name));
    preview.tabIndex = 0;
    var meta = el("p", "hint context-meta", "");
    chip.appendChild(head);
    chip.appendChild(preview);
    chip.appendChild(meta);
    ui.selected.appendChild(chip);
    selected.set(persona.name, { name: persona.name, chip: chip, label: label, preview: preview, meta: meta });
    selectionChanged();
    contextRequest(persona.name);
  }

  function personaDeselect(name) {
    var entry = selected.get(name);
    if (!entry) {
      return;
    }
    entry.chip.remove();
    selected.delete(name);
    selectionChanged();
  }

  function selectionChanged() {
    ui.selectedEmpty.hidden = selected.size > 0;
    Array.prototype.forEach.call(ui.results.querySelectorAll(".persona-option"), function (button) {
      button.setAttribute("aria-pressed", selected.has(button.dataset.name) ? "true" : "false");
    });
  }

  function contextShow(context) {
    var entry = selected.get(context.name);
    if (!entry) {
      return;
    }
    if (context.display_name) {
      entry.label.textContent = context.display_name;
    }
    entry.preview.textContent = asText(context.context);
    var meta = "About " + asText(context.tokens) + " tokens";
    entry.meta.textContent = context.shortened ? meta + ", shortened to fit the budget." : meta + ".";
  }

  function contextProblem(name, text) {
    var entry = selected.get(name);
    if (entry) {
      entry.preview.textContent = text;
      entry.meta.textContent = "";
    }
  }

  var searchController = null;
  var searchTimer = null;

  // Text with each lone UTF-16 surrogate (pasted from a broken source) made U+FFFD, as a form sends it:
  // encodeURIComponent throws on one, and the search stalled on "Searching…" with an uncaught error.
  function wellFormed(text) {
    if (typeof text.toWellFormed === "function") {
      return text.toWellFormed();
    }
    var out = "";
    for (var i = 0; i < text.length; i += 1) {
      var code = text.charCodeAt(i);
      var next = text.charCodeAt(i + 1);
      if (code >= 0xd800 && code <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        out += text.charAt(i) + text.charAt(i + 1);
        i += 1;
      } else {
        out += code >= 0xd800 && code <= 0xdfff ? "\ufffd" : text.charAt(i);
      }
    }
    return out;
  }

  function personasSearch(query) {
    if (searchController) {
      searchController.abort();
    }
    searchController = new AbortController();
    var url = config.personasUrl + "?search=" + encodeURIComponent(wellFormed(query));
    ui.resultsStatus.textContent = "Searching…";
    fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      signal: searchController.signal,
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        personasRender(data, query);
      })
      .catch(function (error) {
        if (error.name !== "AbortError") {
          ui.resultsStatus.textContent = "Personas could not be loaded. Try again in a moment.";
        }
      });
  }

  function personasRender(data, query) {
    var results = Array.isArray(data.results) ? data.results : [];
    ui.results.replaceChildren();
    results.forEach(function (persona) {
      var item = el("li");
      var button = el("button", "persona-option");
      button.type = "button";
      button.dataset.name = asText(persona.name);
      button.setAttribute("aria-pressed", selected.has(persona.name) ? "true" : "false");
      button.appendChild(el("span", "persona-name", persona.display_name || persona.name));
      button.appendChild(el("span", "persona-summary", persona.summary || ""));
      button.addEventListener("click", function () {
        if (selected.has(persona.name)) {
          personaDeselect(persona.name);
        } else {
          personaSelect({ name: asText(persona.name), display_name: asText(persona.display_name) });
        }
      });
      item.appendChild(button);
      ui.results.appendChild(item);
    });
    var count = typeof data.count === "number" ? data.count : results.length;
    if (!results.length) {
      ui.resultsStatus.textContent = query ? "No persona matches that search." : "No personas yet.";
    } else if (count > results.length) {
      ui.resultsStatus.textContent = "Showing " + results.length + " of " + count + ": search to narrow.";
    } else {
      ui.resultsStatus.textContent = count + (count === 1 ? " persona" : " personas");
    }
  }

  ui.search.addEventListener("input", function () {
    window.clearTimeout(searchTimer);
    searchTimer = window.setTimeout(function () {
      personasSearch(ui.search.value.trim());
    }, 250);
  });
  ui.search.addEventListener("keydown", function (event) {
    // Enter searches now instead of submitting the generation form.
    if (event.key === "Enter") {
      event.preventDefault();
      window.clearTimeout(searchTimer);
      personasSearch(ui.search.value.trim());
    }
  });

  /* ---------------------------------------------------------------- plot editor */

  // No maxlength on the plot or the title: a browser cuts a paste at maxlength without a word (and
  // counts UTF-16 units, so half as many emoji fit). The counter and Generate say what is too long.
  function textLength(value) {
    // Code points, as the server counts them (a string's length counts UTF-16 units).
    return Array.from(value).length;
  }

  function plotLength() {
    // What is sent: the plot without the white space around it (a paste's last line break), which the
    // server does not count either.
    return textLength(ui.plot.value.trim());
  }

  function plotCountUpdate() {
    var limit = Number(ui.plotCount.dataset.limit);
    var length = plotLength();
    ui.plotCount.textContent = length.toLocaleString() + " / " + limit.toLocaleString() + " characters";
    ui.plotCount.classList.toggle("over-limit", length > limit);
  }

  ui.plot.addEventListener("input", plotCountUpdate);

  /* ---------------------------------------------------------------- the request behind a run */

  // What this tab asked for, kept for the tab's session under the run's id: a reload (which attaches
  // to the run in the address bar) puts the plot, title, cast and choices back in the form, so the
  // writer's text is never lost and Retry still has its request. Only the newest run is kept.
  var REQUEST_PREFIX = "generation-request:";
  var UNSENT = "unsent:" + config.userId + ":" + window.location.pathname;

  function requestRemember(runId, request) {
    var personas = request.personas.map(function (name) {
      var entry = selected.get(name);
      return { name: name, display_name: entry ? entry.label.textContent : name };
    });
    try {
      for (var i = window.sessionStorage.length - 1; i >= 0; i -= 1) {
        var key = window.sessionStorage.key(i);
        if (key && key.indexOf(REQUEST_PREFIX) === 0) {
          window.sessionStorage.removeItem(key);
        }
      }
      window.sessionStorage.setItem(REQUEST_PREFIX + runId, JSON.stringify({ request: request, personas: personas }));
    } catch (error) {
      // A full or disabled storage: a reload then shows the run without refilling the form.
    }
  }

  function requestRecalled(runId) {
    var kept = null;
    try {
      kept = JSON.parse(window.sessionStorage.getItem(REQUEST_PREFIX + runId) || "null");
    } catch (error) {
      return null;
    }
    if (!kept || typeof kept !== "object" || !kept.request || typeof kept.request.plot !== "string") {
      return null;
    }
    if (!Array.isArray(kept.personas)) {
      return null;
    }
    kept.personas = kept.personas.filter(function (persona) {
      return persona && typeof persona.name === "string";
    });
    return kept;
  }

  // What the writer typed in the plot and title since the last request this tab sent (none sent yet,
  // or new text after a run): kept for the tab's session per page, so a reload, or leaving and coming
  // back, does not lose it, nor put back in its place the plot of the run in the address bar.
  var DRAFT = "generation-draft:" + config.userId + ":" + window.location.pathname;

  function draftStore() {
    try {
      window.sessionStorage.setItem(DRAFT, JSON.stringify({ plot: ui.plot.value, title: ui.title.value }));
    } catch (error) {
      // A full or disabled storage: a reload loses the text, as it did before.
    }
  }

  function draftForget() {
    try {
      window.sessionStorage.removeItem(DRAFT);
    } catch (error) {
      // Nothing kept.
    }
  }

  function draftRestore() {
    var draft = null;
    try {
      draft = JSON.parse(window.sessionStorage.getItem(DRAFT) || "null");
    } catch (error) {
      return;
    }
    if (draft && typeof draft === "object" && typeof draft.plot === "string" && typeof draft.title === "string") {
      ui.plot.value = draft.plot;
      ui.title.value = draft.title;
    }
  }

  ui.plot.addEventListener("input", draftStore);
  ui.title.addEventListener("input", draftStore);

  function choiceRestore(select, value) {
    if (!select || value === undefined || value === null) {
      return;
    }
    var wanted = String(value);
    var known = Array.prototype.some.call(select.options, function (option) {
      return option.value === wanted;
    });
    if (known) {
      select.value = wanted;
    }
  }

  function formRestore(kept) {
    ui.plot.value = kept.request.plot;
    ui.title.value = asText(kept.request.title);
    choiceRestore(ui.model, kept.request.model);
    choiceRestore(ui.mode, kept.request.mode);
    choiceRestore(ui.maxTokens, kept.request.max_tokens);
    // The cast asked for, in place of the story's own (the picker selects these when it starts).
    config.initialPersonas = kept.personas.map(function (persona) {
      return { name: persona.name, display_name: asText(persona.display_name) };
    });
  }

  /* ---------------------------------------------------------------- the generation stream */

  var run = null; // the generation on screen: {socket, request, finished, ...}

  function requestBuild() {
    var plot = ui.plot.value.trim();
    var limit = Number(ui.plotCount.dataset.limit);
    if (!selected.size) {
      return { error: "Pick at least one persona.", field: ui.search };
    }
    if (!plot) {
      return { error: "Write a plot first.", field: ui.plot };
    }
    if (plotLength() > limit) {
      return { error: "The plot is longer than " + limit.toLocaleString() + " characters.", field: ui.plot };
    }
    var request = {
      type: "generate",
      plot: plot,
      personas: Array.from(selected.keys()),
      model: ui.model.value,
      max_tokens: Number(ui.maxTokens.value),
    };
    if (ui.mode && ui.mode.value) {
      request.mode = ui.mode.value;
    }
    var title = ui.title.value.trim();
    var titleLimit = Number(ui.title.dataset.limit);
    if (titleLimit && textLength(title) > titleLimit) {
      return {
        error: "The title is longer than " + titleLimit.toLocaleString() + " characters.",
        field: ui.title,
      };
    }
    if (title) {
      request.title = title;
    }
    if (config.storyId) {
      request.story_id = config.storyId;
    }
    return { request: request };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (run && !run.finished) {
      return;
    }
    var built = requestBuild();
    if (built.error) {
      showFormError(built.error, built.field);
      return;
    }
    showFormError("");
    runStart(built.request);
  });

  // A refusal that says when to come back (rate_limited, busy, the provider's retry-after): Retry
  // waits until then, counting down, instead of asking at once for the same refusal.
  var retryTimer = null;

  function retryWait(seconds) {
    var until = Date.now() + seconds * 1000;
    // The countdown is for the eyes: a name that changed every second was read out every second by a
    // screen reader whose focus is on the button. Its name says once when Retry is possible again.
    var clock = seconds > 90 ? { hour: "2-digit", minute: "2-digit" } : { hour: "2-digit", minute: "2-digit", second: "2-digit" };
    function tick() {
      var left = Math.ceil((until - Date.now()) / 1000);
      if (left <= 0) {
        retryReady();
        return;
      }
      // aria-disabled, not disabled: the button keeps keyboard focus (focus follows the run's controls),
      // and a press does nothing until the wait is over.
      ui.retry.setAttribute("aria-disabled", "true");
      ui.retry.textContent = "Retry in " + (left > 90 ? Math.ceil(left / 60) + " min" : left + " s");
    }
    retryReady();
    ui.retry.setAttribute("aria-label", "Retry, possible again at " + new Date(until).toLocaleTimeString([], clock));
    tick();
    retryTimer = window.setInterval(tick, 1000);
  }

  function retryReady() {
    window.clearInterval(retryTimer);
    retryTimer = null;
    ui.retry.removeAttribute("aria-disabled");
    ui.retry.removeAttribute("aria-label");
    ui.retry.textContent = "Retry";
  }

  function streamReset() {
    ui.stream.hidden = false;
    ui.error.hidden = true;
    retryReady();
    ui.retry.hidden = true;
    ui.saved.hidden = true;
    ui.castDropped.hidden = true;
    ui.castDropped.replaceChildren();
    ui.scenes.replaceChildren();
    liveClear(ui.raw);
    ui.rawAll.replaceChildren();
    ui.writing.hidden = true;
    ui.rawDetails.open = false;
    ui.progress.max = 1000;
    ui.progress.value = 0;
    ui.stats.textContent = "Connecting…";
    ui.cancel.hidden = false;
    ui.cancel.disabled = false;
    ui.announcer.textContent = "";
    announceAlert("");
  }

  // Reconnection after a drop: waits of 0.5 s doubling up to 8 s, at most RECONNECT_TRIES in a row.
  var RECONNECT_FIRST_MS = 500;
  var RECONNECT_MAX_MS = 8000;
  var RECONNECT_TRIES = 8;
  // The server's close code for "this process is stopping; nothing was started" (docs/protocol.md).
  var CLOSE_SERVER_STOPPING = 4503;

  function runStart(request) {
    // The last run's address goes now: a new request that the server refuses must not bring that run
    // back on a reload. This one's comes with its `accepted`.
    runAddressShow(null);
    // The request holds the text now (the draft was for text not sent yet).
    draftForget();
    // Kept until it is accepted (under the run's id then): a request refused before (signed out, busy)
    // and a reload, or a sign-in that comes back to this page, put it back in the form.
    requestRemember(UNSENT, request);
    runOpen({ type: "request", request: request });
  }

  function runAttach(runId, request) {
    runOpen({ type: "attach", runId: runId, request: request });
  }

  // The button a keyboard or screen-reader user pressed is disabled or hidden by what it does
  // (Generate, Retry, Cancel), which drops focus to the page's top. Focus goes on to the control
  // that now matters instead, without scrolling the stream away.
  function focusLost() {
    var active = document.activeElement;
    return !active || active === document.body || active === ui.generate || active === ui.retry || active === ui.cancel;
  }

  function focusMove(target) {
    if (target && !target.hidden && !target.disabled) {
      target.focus({ preventScroll: true });
    }
  }

  function focusSettle(current) {
    // Only for a run this page started or cancelled: a reload's replay leaves focus where it is.
    if (!current.focusFollows || !focusLost()) {
      return;
    }
    if (!ui.retry.hidden && !ui.error.hidden) {
      focusMove(ui.retry);
    } else if (!ui.saved.hidden) {
      focusMove(ui.savedLink);
    } else {
      focusMove(ui.generate);
    }
  }

  function runOpen(start) {
    var moveFocus = start.type === "request" && focusLost();
    streamReset();
    ui.generate.disabled = true;
    if (moveFocus) {
      focusMove(ui.cancel);
    }
    var current = {
      socket: null,
      request: start.request || null,
      runId: start.runId || null,
      lastSeq: 0,
      tries: 0,
      cancelAsked: false,
      finished: false,
      startedAt: performance.now(),
      maxTokens: start.request ? start.request.max_tokens : 0,
      outputTokens: 0,
      etaSeconds: null,
      sceneCount: 0,
      ticker: null,
      // Between an attach's `attached` and the last event it replays (docs/protocol.md, "attached"):
      // announcements wait, and the run's state is said once at the end (replaySummary).
      replaying: false,
      replayTo: null,
      // Whether the clock was set from the run's own time (attached's elapsed_ms).
      clockKnown: false,
      replayHeard: "",
      // What the page is doing about the connection ("reconnecting", "cancelling"): shown by the
      // ticker's every redraw until it no longer holds, never overwritten a quarter second later.
      note: "",
      // Whether focus follows the run's controls (a run started here, or cancelled from here).
      focusFollows: start.type === "request",
    };
    run = current;
    socketOpen(current);
    current.ticker = window.setInterval(function () {
      statsRender(current);
    }, 250);
    ui.stream.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function socketOpen(current) {
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    var socket = new WebSocket(scheme + "//" + window.location.host + config.wsPath);
    current.socket = socket;
    socket.addEventListener("open", function () {
      if (current.finished) {
        socket.close(1000); // cancelled while it was connecting: nothing is asked
        return;
      }
      if (current.runId) {
        // A reload, a reconnect: everything after the last event shown, then the live ones.
        // confirm: the server says first where the replay ends (`attached`), for the announcements.
        socket.send(JSON.stringify({ type: "attach", run_id: current.runId, after: current.lastSeq, confirm: true }));
        if (current.cancelAsked) {
          socket.send(JSON.stringify({ type: "cancel", run_id: current.runId }));
        }
      } else {
        socket.send(JSON.stringify(current.request));
      }
      current.note = current.cancelAsked ? "Cancelling…" : "";
      ui.stats.textContent = current.lastSeq ? "Reconnected." : "Waiting for the first words…";
    });
    socket.addEventListener("message", function (event) {
      if (run !== current || current.socket !== socket) {
        return;
      }
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (message && typeof message === "object") {
        current.tries = 0;
        eventReceive(current, message);
      }
    });
    socket.addEventListener("close", function (event) {
      if (run === current && current.socket === socket && !current.finished) {
        if (event.code === CLOSE_SERVER_STOPPING && current.tries < RECONNECT_TRIES) {
          // The server process is stopping: the request goes again on a new socket, which reaches
          // another process; a run it had started is attached to there, where it goes on
          // (docs/protocol.md, close code 4503).
          current.tries += 1;
          current.note = current.runId
            ? "The server is restarting; reconnecting…"
            : "The server is restarting; asking again…";
          statsRender(current);
          window.setTimeout(function () {
            if (run === current && !current.finished) {
              socketOpen(current);
            }
          }, RECONNECT_FIRST_MS);
          return;
        }
        socketLost(current);
      }
    });
  }

  function socketLost(current) {
    if (!current.runId || current.tries >= RECONNECT_TRIES) {
      // Not accepted yet (nothing to attach to), or the server stays away.
      errorShow(current, {
        message: "The connection to the server closed before the screenplay was finished.",
        retryable: !current.runId,
      });
      return;
    }
    var wait = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * Math.pow(2, current.tries));
    current.tries += 1;
    current.note =
      (current.cancelAsked ? "Cancelling: connection" : "Connection") +
      " lost; reconnecting in " + Math.round(wait / 100) / 10 + " s…";
    statsRender(current);
    window.setTimeout(function () {
      if (run === current && !current.finished) {
        socketOpen(current);
      }
    }, wait);
  }

  function eventReceive(current, message) {
    if (typeof message.seq === "number") {
      if (message.seq <= current.lastSeq) {
        return; // already shown (a replay overlapping what this page has)
      }
      current.lastSeq = message.seq;
    }
    if (message.type === "accepted" && typeof message.run_id === "number" && !current.runId) {
      current.runId = message.run_id;
      if (current.request) {
        requestRemember(message.run_id, current.request);
      }
      runAddressShow(message.run_id);
    }
    if (message.type === "error" && message.code === "not_found") {
      runAddressShow(null);
    }
    eventHandle(current, message);
    if (current.replaying && replayOver(current, message)) {
      current.replaying = false;
      announce(replaySummary(current));
    }
  }

  function replayOver(current, message) {
    if (message.type === "done" || message.type === "cancelled" || message.type === "error") {
      return true;
    }
    return typeof current.replayTo === "number" && typeof message.seq === "number" && message.seq >= current.replayTo;
  }

  // One sentence for where the run stands after a replay: how far it got, or how it ended.
  function replaySummary(current) {
    var done = ui.scenes.querySelectorAll(".scene:not(.scene-pending):not(.scene-settled)").length;
    var scenes = done === 1 ? "1 scene" : done + " scenes";
    if (current.finished) {
      return ((done ? scenes + " written. " : "") + current.replayHeard).trim();
    }
    if (ui.scenes.querySelector(".scene-pending")) {
      // Parallel mode: the outline gave every scene its place.
      return "The screenplay is being written: " + done + " of " + ui.scenes.childElementCount + " scenes done.";
    }
    if (!done) {
      return "The screenplay is being written: no scene is finished yet.";
    }
    return "Scene " + (done + 1) + " of the screenplay is being written; " + scenes + " done.";
  }

  function runAddressShow(runId) {
    // The run goes into the address bar (replaceState: no new history entry), so a reload attaches.
    var url = new URL(window.location.href);
    if (runId) {
      url.searchParams.set("run", String(runId));
    } else {
      url.searchParams.delete("run");
    }
    window.history.replaceState(null, "", url.toString());
  }

  function runFinish(current) {
    current.finished = true;
    window.clearInterval(current.ticker);
    ui.cancel.hidden = true;
    ui.generate.disabled = false;
    ui.writing.hidden = true;
    if (current.socket.readyState === WebSocket.OPEN || current.socket.readyState === WebSocket.CONNECTING) {
      current.socket.close(1000);
    }
  }

  var handlers = {
    attached: function (current, message) {
      // The answer to this page's attach: the events up to replay_to are a replay (null: all of them).
      var replayTo = typeof message.replay_to === "number" ? message.replay_to : null;
      current.replayTo = replayTo;
      current.replaying = replayTo === null || replayTo > current.lastSeq;
      // The run's own time so far: the replayed accepted has none, and the replayed progress is as old
      // as the last one logged (none while the model thinks; a resumed run's counts from its resume).
      if (typeof message.elapsed_ms === "number" && message.elapsed_ms >= 0) {
        current.startedAt = performance.now() - message.elapsed_ms;
        current.clockKnown = true;
      }
    },
    accepted: function (current, message) {
      if (typeof message.max_tokens === "number") {
        current.maxTokens = message.max_tokens;
      }
      if (typeof message.estimated_seconds === "number") {
        current.etaSeconds = message.estimated_seconds;
      }
      if (!current.clockKnown) {
        current.startedAt = performance.now(); // live: the run starts now (a replay's was said by attached)
      }
      announce("Writing has started.");
      statsRender(current);
    },
    resumed: function (current, message) {
      // The server process running this run stopped; another took it over from its last checkpoint.
      // The event holds the outline and every finished scene: a page that saw nothing draws them now.
      if (typeof message.max_tokens === "number") {
        current.maxTokens = message.max_tokens;
      }
      var outline = message.outline && typeof message.outline === "object" ? message.outline : null;
      if (outline && Array.isArray(outline.scenes) && outline.scenes.length) {
        handlers.outline(current, { scenes: outline.scenes });
      }
      (Array.isArray(message.scenes) ? message.scenes : []).forEach(function (item) {
        if (item && typeof item.index === "number" && item.scene && typeof item.scene === "object") {
          sceneShow(item.index, sceneBuild(item.scene));
        }
      });
      // Text of a scene that was being written when the process stopped is written again.
      liveClear(ui.raw);
      // Its progress counts from the resume: the clock kept (from accepted, or attached) must not go back.
      current.clockKnown = true;
      announce("The writing was interrupted on the server and goes on from the last finished scene.");
    },
    delta: function (current, message) {
      var text = asText(message.text);
      ui.rawAll.appendChild(document.createTextNode(text));
      liveAppend(ui.raw, text);
      ui.writing.hidden = false;
      ui.raw.scrollTop = ui.raw.scrollHeight;
    },
    scene: function (current, message) {
      if (!message.scene || typeof message.scene !== "object") {
        return;
      }
      sceneShow(message.index, sceneBuild(message.scene));
      // The scene is complete: the "being written" pane starts over for the next one.
      liveClear(ui.raw);
      current.sceneCount += 1;
      announce("Scene " + current.sceneCount + " written: " + asText(message.scene.heading));
    },
    outline: function (current, message) {
      // Parallel mode: the outline names the scenes before they are written; placeholders keep order.
      var scenes = Array.isArray(message.scenes) ? message.scenes : Array.isArray(message.outline) ? message.outline : [];
      scenes.forEach(function (item, position) {
        var index = item && typeof item.index === "number" ? item.index : position;
        if (!ui.scenes.querySelector('[data-index="' + index + '"]')) {
          sceneShow(index, scenePlaceholder(item && typeof item === "object" ? item.heading : item));
        }
      });
      announce("Outline ready: " + scenes.length + " scenes.");
      // The outline's raw text has served its purpose once its scenes have places.
      liveClear(ui.raw);
      ui.writing.hidden = true;
    },
    outline_delta: function (current, message) {
      // Parallel mode: the outline streams into the "being written" pane like single mode's text.
      handlers.delta(current, message);
    },
    scene_retry: function (current, message) {
      // Parallel mode: one scene is written again; what it had streamed so far is dropped.
      var node = ui.scenes.querySelector('[data-index="' + Number(message.index) + '"]');
      var raw = node ? node.querySelector(".raw") : null;
      if (raw) {
        liveClear(raw);
      }
      announce("Scene " + (Number(message.index) + 1) + " is being written again.");
    },
    scene_delta: function (current, message) {
      var index = Number(message.index);
      var node = ui.scenes.querySelector('[data-index="' + index + '"]');
      if (!node) {
        node = scenePlaceholder("");
        sceneShow(index, node);
      }
      var raw = node.querySelector(".raw");
      if (raw) {
        liveAppend(raw, asText(message.text));
      }
      ui.rawAll.appendChild(document.createTextNode(asText(message.text)));
    },
    progress: function (current, message) {
      if (typeof message.output_tokens === "number") {
        current.outputTokens = message.output_tokens;
      }
      if (typeof message.eta_seconds === "number") {
        current.etaSeconds = message.eta_seconds;
      }
      if (typeof message.elapsed_ms === "number") {
        var startedAt = performance.now() - message.elapsed_ms;
        // Once attached says the run's time, progress only moves the clock on: a replayed progress is
        // older than the attach, and a resumed run's counts from its resume.
        current.startedAt = current.clockKnown ? Math.min(current.startedAt, startedAt) : startedAt;
      }
      statsRender(current);
    },
    saved: function (current, message) {
      var url = asText(message.url);
      // Only a same-site path is followed; anything else falls back to the story's own page.
      if (url.charAt(0) !== "/" || url.charAt(1) === "/" || url.charAt(1) === "\\") {
        url = "/stories/" + encodeURIComponent(asText(message.story_id)) + "/";
      }
      ui.savedLink.href = url;
      ui.savedLink.textContent = "Open the story (version " + asText(message.version) + ")";
      ui.saved.hidden = false;
      var dropped = castDroppedShow(message.cast_dropped);
      announce("Saved as version " + asText(message.version) + "." + (dropped ? " " + dropped : ""));
    },
    done: function (current, message) {
      ui.progress.value = ui.progress.max;
      current.etaSeconds = 0;
      var usage = message.usage && typeof message.usage === "object" ? message.usage : {};
      if (typeof usage.output_tokens === "number") {
        current.outputTokens = usage.output_tokens;
      }
      // The run's own time, live or replayed: an end rebuilt from the database (after a restart) has
      // no progress events, and the time since this page loaded is not the run's.
      var timings = message.timings && typeof message.timings === "object" ? message.timings : {};
      if (typeof timings.total_ms === "number") {
        current.totalMs = timings.total_ms; // shown as it is: the same on a replay
      }
      runFinish(current);
      // Scenes of the outline still waiting at the end are those a rewrite did not touch.
      pendingSettle("Not rewritten in this run: unchanged in the saved version.");
      statsRender(current, "Finished");
      focusSettle(current);
    },
    error: function (current, message) {
      errorShow(current, message);
    },
    cancelled: function (current) {
      runFinish(current);
      pendingSettle("Not written: the run was cancelled.");
      statsRender(current, "Cancelled");
      ui.stats.textContent = "Cancelled. Nothing was saved.";
      announce("Cancelled. Nothing was saved.");
      focusSettle(current);
    },
  };

  // A persona an editor deleted while the run was writing cannot be in the story's cast: the
  // screenplay keeps its character, and the writer is told which one left the cast (docs/generation.md).
  function castDroppedShow(dropped) {
    var members = (Array.isArray(dropped) ? dropped : []).filter(function (member) {
      return member && typeof member === "object";
    });
    if (!members.length) {
      return "";
    }
    var names = members.map(function (member) {
      return isolated(asText(member.character_name)) + " (persona " + isolated(asText(member.persona)) + ")";
    });
    var one = members.length === 1;
    ui.castDropped.textContent =
      names.join(", ") + " left the story's cast: " + (one ? "its persona was" : "their personas were") +
      " deleted while the screenplay was being written. The screenplay keeps " +
      (one ? "the character and its lines." : "the characters and their lines.");
    ui.castDropped.hidden = false;
    return ui.castDropped.textContent;
  }

  // The model's text inside the page's own sentence, between FSI and PDI with its own isolate marks
  // balanced first, as the server does (storyproject/bidi.py): a right-to-left override left open in
  // a character's name must not draw the rest of the sentence backwards.
  function isolated(text) {
    var open = 0;
    var kept = "";
    Array.from(text).forEach(function (char) {
      if (char === "\u2066" || char === "\u2067" || char === "\u2068") {
        open += 1;
      } else if (char === "\u2069") {
        if (!open) {
          return;
        }
        open -= 1;
      }
      kept += char;
    });
    return "\u2068" + kept + "\u2069".repeat(open) + "\u2069";
  }

  function eventHandle(current, message) {
    var handler = Object.prototype.hasOwnProperty.call(handlers, message.type) ? handlers[message.type] : null;
    if (handler) {
      handler(current, message);
    }
    if (current.runId && (message.type === "done" || message.type === "cancelled" || message.type === "error")) {
      runNoticeEnd(current.runId);
    }
  }

  // The story page's notice that this run is writing a new version (rendered when the page loaded): the
  // run has ended, as the stream below says, so the notice goes rather than go on saying it writes.
  function runNoticeEnd(runId) {
    document.querySelectorAll('.writing-notice[data-run="' + Number(runId) + '"]').forEach(function (notice) {
      notice.remove();
    });
  }

  // The notices of runs this page does not follow (another tab's Regenerate, a scene rewrite, a
  // script's run): each asks after its run every few seconds and says once it has ended, instead of
  // going on saying a version is being written until a reload.
  var NOTICE_POLL_MS = 3000;

  function noticesWatch(followed) {
    document.querySelectorAll(".writing-notice[data-run-url]").forEach(function (notice) {
      if (Number(notice.dataset.run) === followed) {
        return; // this page's own stream says how it ends (runNoticeEnd)
      }
      var timer = window.setInterval(function () {
        if (!notice.isConnected) {
          window.clearInterval(timer);
          return;
        }
        fetch(notice.dataset.runUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (response) {
            if (response.status >= 400 && response.status < 500) {
              window.clearInterval(timer); // signed out, or the run is gone: nothing more to learn
            }
            return response.ok ? response.json() : null;
          })
          .then(function (data) {
            if (data && typeof data.status === "string" && data.status !== "streaming") {
              window.clearInterval(timer);
              noticeEnded(notice, data);
            }
          })
          .catch(function () {
            // Asked again at the next turn.
          });
      }, NOTICE_POLL_MS);
    });
  }

  function noticeEnded(notice, run) {
    var runId = Number(notice.dataset.run);
    notice.replaceChildren();
    if (run.status === "succeeded" && typeof run.version === "number") {
      notice.appendChild(document.createTextNode("Run #" + runId + " has written version " + run.version + ". "));
      var link = el("a", "", "Open it");
      link.href = notice.dataset.storyUrl + "?version=" + Number(run.version);
      notice.appendChild(link);
    } else {
      notice.textContent = "Run #" + runId + " has ended (" + asText(run.status) + ") without a new version.";
    }
  }

  function errorShow(current, message) {
    runFinish(current);
    pendingSettle("Not written: the run stopped.");
    var text = asText(message.message) || "Something went wrong.";
    if (message.code === "save_failed" || ui.scenes.childElementCount || ui.rawAll.textContent) {
      // Nothing streamed is thrown away: the scenes stay on screen and the full text opens below.
      text += " What was written so far is kept below.";
      ui.rawDetails.open = ui.rawAll.textContent.length > 0;
    }
    ui.errorMessage.textContent = text;
    // Signed out (in another tab, or the session ended): sign in again in a new tab, this page and
    // everything typed in it stay, and Generate asks again on a new socket.
    ui.signIn.hidden = message.code !== "unauthenticated";
    ui.retry.hidden = message.retryable !== true || !current.request;
    if (!ui.retry.hidden && typeof message.retry_after === "number" && message.retry_after > 0) {
      retryWait(message.retry_after);
    }
    ui.error.hidden = false;
    statsRender(current, "Stopped");
    announce(""); // the alert says it; a replay's summary then says no stale scene after it
    announceAlert(text);
    focusSettle(current);
  }

  ui.retry.addEventListener("click", function () {
    if (retryTimer !== null) {
      return; // still waiting for the time the refusal gave
    }
    if (run && run.finished && run.request) {
      runStart(run.request);
    }
  });

  ui.cancel.addEventListener("click", function () {
    if (!run || run.finished) {
      return;
    }
    var current = run;
    current.focusFollows = true;
    if (!current.runId && current.socket.readyState !== WebSocket.OPEN) {
      // Nothing was asked yet: the socket is still connecting (or about to ask again after a 4503).
      // The run ends here, and the request is never sent (see the socket's "open").
      handlers.cancelled(current);
      return;
    }
    ui.cancel.disabled = true;
    // Closing the socket no longer stops a run: the cancel is sent now, or on the reconnect.
    current.cancelAsked = true;
    current.note = "Cancelling…";
    statsRender(current);
    if (current.socket.readyState === WebSocket.OPEN) {
      var cancel = current.runId ? { type: "cancel", run_id: current.runId } : { type: "cancel" };
      current.socket.send(JSON.stringify(cancel));
    }
  });

  function statsRender(current, label) {
    var elapsed =
      (typeof current.totalMs === "number" ? current.totalMs : performance.now() - current.startedAt) / 1000;
    var parts = [current.outputTokens.toLocaleString() + " output tokens", elapsed.toFixed(1) + " s elapsed"];
    if (label) {
      parts.unshift(label);
    } else if (current.note) {
      parts.unshift(current.note); // no ETA meanwhile: the run's pace is not known from here
    } else if (typeof current.etaSeconds === "number") {
      parts.push("about " + Math.max(0, Math.round(current.etaSeconds)) + " s left");
    }
    ui.stats.textContent = parts.join(" · ");
    if (!current.finished) {
      // A revised ETA may lower the estimate; the bar never moves backwards all the same.
      var value = Math.round(progressFraction(current, elapsed) * ui.progress.max);
      ui.progress.value = Math.max(ui.progress.value, value);
    }
  }

  function progressFraction(current, elapsed) {
    // Time-based when the server gives an ETA; otherwise tokens against the length asked for.
    var fraction;
    if (typeof current.etaSeconds === "number" && current.etaSeconds > 0 && current.outputTokens > 0) {
      fraction = elapsed / (elapsed + current.etaSeconds);
    } else {
      fraction = current.maxTokens ? current.outputTokens / current.maxTokens : 0;
    }
    return Math.min(0.99, Math.max(0, fraction));
  }

  /* ---------------------------------------------------------------- screenplay rendering */

  function parenthetical(text) {
    var value = asText(text).trim();
    if (!value || (value.charAt(0) === "(" && value.charAt(value.length - 1) === ")")) {
      return value;
    }
    return "(" + value + ")";
  }

  // A paragraph of the screenplay takes its direction from its own first letter (dir="auto", as the
  // server's _scene.html): in Arabic or Hebrew it runs right to left, its closing "!" at its end.
  // The text a model is writing, shown as screenplay while it streams: the part of its JSON reply since
  // the last finished scene (or a parallel scene's own, or the outline's) is read as far as it goes, its
  // strings in the contract's keys (stories/contract/screenplay.schema.json and the outline's), and drawn
  // as a heading, action and dialogue lines. It was shown as the raw JSON, quotes, keys and escapes.
  // Everything as the model wrote it stays under "Everything the model wrote". Text that holds none of
  // those keys (not the contract's JSON) is shown as it came.
  var liveTexts = new WeakMap();
  var LIVE_FIELD = /"(title|logline|heading|summary|type|character|parenthetical|text)"\s*:\s*"((?:[^"\\]|\\.)*)/g;
  var LIVE_ELEMENT_KEYS = ["type", "character", "parenthetical", "text"];

  function jsonStringRead(body) {
    // A JSON string's body, perhaps cut short by the stream (even inside an escape: "\u00").
    try {
      return JSON.parse('"' + body + '"');
    } catch (error) {
      try {
        return JSON.parse('"' + body.replace(/\\u[0-9a-fA-F]{0,3}$/, "") + '"');
      } catch (again) {
        return "";
      }
    }
  }

  function liveParts(text) {
    var parts = { title: "", logline: "", blocks: [] };
    var block = null;
    var element = null;
    var match;
    LIVE_FIELD.lastIndex = 0;
    while ((match = LIVE_FIELD.exec(text)) !== null) {
      var key = match[1];
      var value = jsonStringRead(match[2]);
      if ((key === "title" || key === "logline") && !block) {
        parts[key] = value;
        continue;
      }
      if (key === "heading" || (key === "summary" && block && block.summary !== null)) {
        block = { heading: "", summary: null, elements: [] };
        parts.blocks.push(block);
        element = null;
      }
      if (key === "heading") {
        block.heading = value;
        continue;
      }
      if (key === "summary") {
        if (!block) {
          block = { heading: "", summary: null, elements: [] };
          parts.blocks.push(block);
        }
        block.summary = value;
        continue;
      }
      if (LIVE_ELEMENT_KEYS.indexOf(key) < 0) {
        continue;
      }
      if (!block) {
        block = { heading: "", summary: null, elements: [] };
        parts.blocks.push(block);
      }
      // Each element's keys come once, in any order: a key it has already starts the next element.
      if (!element || Object.prototype.hasOwnProperty.call(element, key)) {
        element = {};
        block.elements.push(element);
      }
      element[key] = value;
    }
    return parts;
  }

  function liveShow(container, text) {
    var parts = liveParts(text);
    if (!parts.title && !parts.logline && !parts.blocks.length) {
      container.replaceChildren(textEl("span", "live-raw", text));
      return;
    }
    var nodes = [];
    if (parts.title) {
      nodes.push(textEl("p", "live-title", parts.title));
    }
    if (parts.logline) {
      nodes.push(textEl("p", "live-summary", parts.logline));
    }
    parts.blocks.forEach(function (block) {
      if (block.heading) {
        nodes.push(textEl("p", "live-heading", block.heading));
      }
      if (block.summary) {
        nodes.push(textEl("p", "live-summary", block.summary));
      }
      block.elements.forEach(function (element) {
        if (element.type === "dialogue" || element.character !== undefined) {
          var dialogue = el("div", "live-dialogue");
          dialogue.appendChild(textEl("p", "live-character", element.character || ""));
          if (element.parenthetical) {
            dialogue.appendChild(textEl("p", "live-parenthetical", parenthetical(element.parenthetical)));
          }
          if (element.text !== undefined) {
            dialogue.appendChild(textEl("p", "live-line", element.text));
          }
          nodes.push(dialogue);
        } else if (element.text !== undefined) {
          nodes.push(textEl("p", element.type === "transition" ? "live-transition" : "live-action", element.text));
        }
      });
    });
    container.replaceChildren.apply(container, nodes);
  }

  function liveAppend(container, text) {
    var sofar = (liveTexts.get(container) || "") + text;
    liveTexts.set(container, sofar);
    liveShow(container, sofar);
  }

  function liveClear(container) {
    liveTexts.delete(container);
    container.replaceChildren();
  }

  function textEl(tag, className, text) {
    var node = el(tag, className, text);
    node.dir = "auto";
    return node;
  }

  function sceneBuild(scene) {
    var section = el("section", "scene");
    section.appendChild(textEl("h3", "scene-heading", asText(scene.heading)));
    var elements = Array.isArray(scene.elements) ? scene.elements : [];
    elements.forEach(function (element) {
      if (!element || typeof element !== "object") {
        return;
      }
      if (element.type === "action") {
        section.appendChild(textEl("p", "sp-action", asText(element.text)));
      } else if (element.type === "transition") {
        section.appendChild(textEl("p", "sp-transition", asText(element.text)));
      } else if (element.type === "dialogue") {
        var block = el("div", "sp-dialogue");
        block.appendChild(textEl("p", "sp-character", asText(element.character)));
        if (element.parenthetical) {
          block.appendChild(textEl("p", "sp-parenthetical", parenthetical(element.parenthetical)));
        }
        block.appendChild(textEl("p", "sp-line", asText(element.text)));
        section.appendChild(block);
      }
    });
    return section;
  }

  function pendingSettle(note) {
    // The run is over: no placeholder may go on saying its scene is being written.
    ui.scenes.querySelectorAll(".scene-pending").forEach(function (node) {
      node.classList.remove("scene-pending");
      node.classList.add("scene-settled");
      var heading = node.querySelector(".scene-heading");
      if (heading && heading.textContent === "Scene being written…") {
        heading.textContent = "Scene not written";
      }
      node.appendChild(el("p", "scene-note", note));
    });
  }

  function scenePlaceholder(heading) {
    var section = el("section", "scene scene-pending");
    section.appendChild(el("h3", "scene-heading", asText(heading) || "Scene being written…"));
    section.appendChild(el("div", "raw live", ""));
    return section;
  }

  function sceneShow(index, node) {
    // Scenes may arrive out of order (parallel mode): each goes to its place by index.
    var position = Number(index);
    if (!Number.isFinite(position)) {
      position = ui.scenes.childElementCount;
    }
    node.dataset.index = String(position);
    var existing = ui.scenes.querySelector('[data-index="' + position + '"]');
    if (existing) {
      existing.replaceWith(node);
      return;
    }
    var after = Array.prototype.find.call(ui.scenes.children, function (child) {
      return Number(child.dataset.index) > position;
    });
    ui.scenes.insertBefore(node, after || null);
  }

  /* ---------------------------------------------------------------- start-up */

  function pickerStart() {
    (config.initialPersonas || []).forEach(function (persona) {
      personaSelect(persona);
    });
    personasSearch("");
  }

  // A run in the address bar (a reload, a link from the runs or story page): watch it. When this tab
  // asked for it, the form gets back what was asked (plot, title, cast, choices) before the picker
  // starts, so nothing the writer wrote is lost and Retry can send it again.
  var runInUrl = new URLSearchParams(window.location.search).get("run");
  var runWatched = runInUrl && /^[1-9][0-9]{0,17}$/.test(runInUrl) ? Number(runInUrl) : null;
  var recalled = requestRecalled(runWatched || UNSENT);
  if (recalled) {
    formRestore(recalled);
  }
  // Text typed since that request (or with none sent) is newer than it.
  draftRestore();

  plotCountUpdate();
  // On the story page the form sits in a closed <details>: its requests wait until it is opened.
  var folded = form.closest("details");
  if (folded && !folded.open) {
    folded.addEventListener("toggle", function started() {
      folded.removeEventListener("toggle", started);
      pickerStart();
    });
  } else {
    pickerStart();
  }

  noticesWatch(runWatched);

  if (runWatched) {
    if (folded) {
      folded.open = true;
    }
    runAttach(runWatched, recalled ? recalled.request : null);
  }
})();
