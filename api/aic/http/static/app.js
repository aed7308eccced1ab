// The page's one script: submit images, follow each job over the WebSocket (polling if it fails), show the top 5;
// list the tenant's recent jobs (GET /jobs) when the page opens with a key, so a reload keeps the history.
// The API key lives in sessionStorage only; the WebSocket gets a short-lived token as a subprotocol, never a URL.
// A file over MAX_FILE_SIZE goes straight to the object store when the service has one (POST /uploads answers a
// presigned URL; the file is PUT there; its upload_id is submitted); otherwise it is refused as too big.
"use strict";

(() => {
  const config = document.body.dataset;
  const PREFIX = config.apiPrefix;
  const MAX_FILE_SIZE = Number(config.maxFileSize);
  const BATCH_MAX_FILES = Number(config.batchMaxFiles);
  const KEY_HEADER = config.apiKeyHeader;
  const TYPES = { "image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP" };
  const EXTENSIONS = /\.(jpe?g|png|webp)$/i;
  const KEY_STORE = "aic.api_key";
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const POLL_MS = 1000;

  const form = document.getElementById("classify");
  const keyField = document.getElementById("api_key");
  const fileField = document.getElementById("images");
  const drop = document.getElementById("drop");
  const message = document.getElementById("message");
  const jobs = document.getElementById("jobs");
  const empty = document.getElementById("empty");
  const history = document.getElementById("history");
  const historyNote = document.getElementById("history_note");
  let dropped = null;
  let token = null;

  document.getElementById("limit").textContent = megabytes(MAX_FILE_SIZE);
  keyField.value = sessionStorage.getItem(KEY_STORE) || "";
  keyField.addEventListener("input", () => {
    sessionStorage.setItem(KEY_STORE, keyField.value.trim());
    token = null;
  });
  keyField.addEventListener("change", () => recent());
  fileField.addEventListener("change", () => { dropped = null; });

  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    dropped = Array.from(event.dataTransfer.files);
    if (dropped.length) classify(dropped);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    classify(dropped || Array.from(fileField.files));
  });

  function megabytes(bytes) {
    return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  }

  function say(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  function el(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    if (text) node.textContent = text;
    return node;
  }

  // --- the API --------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      super(body.detail || `HTTP ${status}`);
      this.status = status;
      this.body = body;
      this.retryAfter = retryAfter;
    }
  }

  async function api(method, path, body, extra = {}) {
    const key = keyField.value.trim();
    let response;
    try {
      const headers = { ...extra, [KEY_HEADER]: key };
      response = await fetch(PREFIX + path, { method, body, headers, credentials: "omit" });
    } catch (error) {
      throw new ApiError(0, { error: "UNREACHABLE", detail: "the service cannot be reached" });
    }
    let answer = {};
    try { answer = await response.json(); } catch (error) { answer = {}; }
    if (!response.ok) throw new ApiError(response.status, answer, response.headers.get("Retry-After"));
    return answer;
  }

  function explain(error) {
    const detail = error.body && error.body.detail ? error.body.detail : error.message;
    if (error.status === 401 || error.status === 403) return `Unauthorised: the API key was refused (${detail}).`;
    if (error.status === 429) return `Rate limited: try again in ${error.retryAfter || "a few"} s.`;
    if (error.status === 503) return `The service is busy or unavailable: try again in ${error.retryAfter || "a few"} s.`;
    if (error.status === 0) return "The service cannot be reached.";
    // the service itself answers 400 with its limit in the detail; a proxy in front may answer a bare 413
    if (error.status === 413) return `Too big: ${error.body && error.body.detail ? detail : "the server refused the upload (413)"}`;
    return detail;
  }

  async function wsToken() {
    if (!token || token.until < Date.now()) {
      const answer = await api("POST", "/auth/token");
      token = { value: answer.access_token, until: Date.now() + (answer.expires_in - 30) * 1000 };
    }
    return token.value;
  }

  // --- one card per image ---------------------------------------------------------------------------------

  function card(file) {
    const item = el("li", { class: "job" });
    const preview = el("img", { alt: "" });
    if (file.type in TYPES) preview.src = URL.createObjectURL(file);
    const body = el("div");
    const name = el("div", { class: "name" }, file.name);
    const bar = el("progress", { max: "100", value: "0", "aria-label": `Progress of ${file.name}` });
    const state = el("div", { class: "state", role: "status" }, "waiting to upload");
    body.append(name, bar, state);
    item.append(preview, body);
    jobs.prepend(item);
    empty.hidden = true;
    return {
      item, bar, state, body,
      progress(status) {
        bar.value = status.progress;
        state.textContent = status.status === "processing" || status.status === "pending"
          ? `${status.status}${status.stage ? ": " + status.stage : ""} (${status.progress}%)`
          : status.status;
      },
      fail(text) {
        bar.remove();
        state.remove();
        item.dataset.state = "error";
        body.append(el("div", { class: "error" }, text));
      },
      predictions(result) {
        bar.remove();
        state.textContent = `completed in ${result.processing_time.toFixed(2)} s (${result.model_version})`;
        const list = el("ol", { class: "predictions", "aria-label": `Top 5 for ${file.name}` });
        for (const p of result.predictions.slice(0, 5)) {
          const row = el("li", { "data-testid": "prediction" });
          const pct = `${(p.confidence * 100).toFixed(1)}%`;
          row.append(
            el("span", { class: "label" }, p.class_name),
            el("meter", { min: "0", max: "1", value: String(p.confidence), "aria-label": `${p.class_name} ${pct}` }),
            el("span", { class: "pct" }, pct),
          );
          list.append(row);
        }
        body.append(list);
        item.dataset.state = "completed";
      },
    };
  }

  function tooBig(file, limit) {
    return `Too big: ${file.name} is ${megabytes(file.size)}; the limit is ${megabytes(limit)}.`;
  }

  function refusal(file) {
    if (!(file.type in TYPES) && !EXTENSIONS.test(file.name)) {
      return `Unsupported type: ${file.name} is ${file.type || "not an image"}; send JPEG, PNG or WebP.`;
    }
    return null;
  }

  async function classify(files) {
    say("");
    if (!keyField.value.trim()) {
      say("Enter your API key first.");
      keyField.focus();
      return;
    }
    if (!files.length) {
      say("Pick or drop at least one image.");
      fileField.focus();
      return;
    }
    const ready = [];
    const large = [];
    for (const file of files) {
      const view = card(file);
      const why = refusal(file);
      if (why) view.fail(why);
      else if (file.size > MAX_FILE_SIZE) large.push({ file, view });
      else ready.push({ file, view });
    }
    for (const one of large) await direct(one);
    for (let start = 0; start < ready.length; start += BATCH_MAX_FILES) {
      await submit(ready.slice(start, start + BATCH_MAX_FILES));
    }
  }

  async function submit(group) {
    const body = new FormData();
    const field = group.length === 1 ? "file" : "files";
    for (const { file } of group) body.append(field, file, file.name);
    for (const { view } of group) view.state.textContent = "uploading";
    let answer;
    try {
      answer = await api("POST", group.length === 1 ? "/classify" : "/classify/batch", body);
    } catch (error) {
      const text = explain(error);
      for (const { view } of group) view.fail(text);
      if (error.status === 401 || error.status === 403 || error.status === 429) say(text);
      return;
    }
    const submitted = group.length === 1 ? [answer] : answer.jobs;
    submitted.forEach((job, index) => follow(job.job_id, group[index].view));
  }

  // A presigned direct upload: the service reserves an upload id and a URL in its object store (and says the
  // largest image it takes there); the file goes to that URL, not through the service; then the id is submitted.
  // A service without an object store refuses the reservation (400): the file is then just over MAX_FILE_SIZE.
  async function direct({ file, view }) {
    view.state.textContent = "uploading";
    let reservation;
    try {
      reservation = await api("POST", "/uploads");
    } catch (error) {
      const text = error.status === 400 ? tooBig(file, MAX_FILE_SIZE) : explain(error);
      view.fail(text);
      if (error.status === 401 || error.status === 403 || error.status === 429) say(text);
      return;
    }
    if (file.size > reservation.max_bytes) return view.fail(tooBig(file, reservation.max_bytes));
    view.item.dataset.upload = "direct";
    try {
      const stored = await fetch(reservation.url, {
        method: reservation.method, body: file, headers: reservation.headers, credentials: "omit",
      });
      if (!stored.ok) throw new Error(`the object store answered HTTP ${stored.status}`);
    } catch (error) {
      return view.fail(`The upload to the object store failed: ${error.message}.`);
    }
    let answer;
    try {
      const body = JSON.stringify({ upload_id: reservation.upload_id });
      answer = await api("POST", "/classify", body, { "Content-Type": "application/json" });
    } catch (error) {
      return view.fail(explain(error));
    }
    follow(answer.job_id, view);
  }

  // --- the tenant's recent jobs -------------------------------------------------------------------------------

  function historyCard(status) {
    const item = el("li", { class: "job", "data-job-id": status.job_id, "data-history": "true" });
    const body = el("div");
    const created = (status.created_at || "").replace("T", " ").slice(0, 19);
    const name = el("div", { class: "name" }, `${status.job_id.slice(0, 8)} · ${created} UTC`);
    const state = el("div", { class: "state", role: "status" });
    body.append(name, state);
    item.append(body);
    history.append(item);
    const view = {
      item, state, body,
      progress(current) {
        state.textContent = current.status === "processing" || current.status === "pending"
          ? `${current.status}${current.stage ? ": " + current.stage : ""} (${current.progress}%)`
          : current.status;
      },
      fail(text) {
        item.dataset.state = "error";
        state.textContent = "";
        body.append(el("div", { class: "error" }, text));
      },
      predictions(result) {
        const list = el("ol", { class: "predictions", "aria-label": `Top 5 of job ${status.job_id}` });
        for (const p of result.predictions.slice(0, 5)) {
          const row = el("li", { "data-testid": "prediction" });
          row.append(el("span", { class: "label" }, p.class_name), el("span", { class: "pct" },
            `${(p.confidence * 100).toFixed(1)}%`));
          list.append(row);
        }
        body.append(list);
        item.dataset.state = "completed";
      },
    };
    view.progress(status);
    return view;
  }

  async function recent() {
    if (!keyField.value.trim()) return;
    let page;
    try {
      page = await api("GET", "/jobs"); // the service's default page: the 20 newest (no query in a URL)
    } catch (error) {
      historyNote.textContent = `Recent jobs are not shown: ${explain(error)}`;
      return;
    }
    history.replaceChildren();
    historyNote.textContent = page.jobs.length ? "" : "No job of yours is stored any more.";
    historyNote.hidden = page.jobs.length > 0;
    for (const status of page.jobs) {
      const view = historyCard(status);
      if (!TERMINAL.has(status.status)) follow(status.job_id, view);
      else if (status.status === "completed") {
        // results on demand: twenty at once would spend a small rate limit's whole burst
        const show = el("button", { type: "button", class: "show" }, "Show top 5");
        show.addEventListener("click", () => { show.remove(); finish(status.job_id, status, view); });
        view.body.append(show);
      } else finish(status.job_id, status, view);
    }
  }

  recent();

  // --- following a job ------------------------------------------------------------------------------------

  async function follow(jobId, view) {
    view.item.dataset.jobId = jobId;
    view.progress({ status: "pending", progress: 0, stage: null });
    let credential;
    try {
      credential = await wsToken();
    } catch (error) {
      view.item.dataset.live = "polling";
      return poll(jobId, view);
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${PREFIX}/status/${jobId}/ws`,
      ["aic.v1", "aic.auth." + credential]);
    let last = null;
    socket.addEventListener("open", () => { view.item.dataset.live = "websocket"; });
    socket.addEventListener("message", (event) => {
      const data = JSON.parse(event.data);
      if (data.error) return; // an ErrorResponse: the close that follows says the rest
      last = data;
      view.progress(data);
    });
    socket.addEventListener("close", () => {
      if (last && TERMINAL.has(last.status)) finish(jobId, last, view);
      else {
        view.item.dataset.live = "polling";
        poll(jobId, view);
      }
    });
  }

  async function poll(jobId, view) {
    try {
      for (;;) {
        const status = await api("GET", `/status/${jobId}`);
        view.progress(status);
        if (TERMINAL.has(status.status)) return finish(jobId, status, view);
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
    } catch (error) {
      view.fail(explain(error));
    }
  }

  async function finish(jobId, status, view) {
    if (status.status === "completed") {
      try {
        view.predictions(await api("GET", `/result/${jobId}`));
      } catch (error) {
        view.fail(explain(error));
      }
    } else if (status.status === "failed") {
      view.fail(`Failed${status.error_code ? " (" + status.error_code + ")" : ""}: ${status.error_message || "no reason given"}`);
    } else {
      view.fail("Cancelled.");
    }
  }
})();
