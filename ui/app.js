// The page talks to the service's job API on this same address, with short requests only:
// POST ../jobs queues a job (the form's settings as JSON; POST ../jobs/estimate first, to ask
// before a job that would run for hours on a server without a GPU, then POST ../jobs?confirm=1
// once the caller agreed: the server refuses such a job without it), GET ../jobs lists the
// caller's jobs, newest first, with each image's progress and files (read once at start), and
// GET ../jobs/events follows them (Server-Sent Events: each event carries its job as GET ../jobs
// shows it); only while that stream is broken does the page poll GET ../jobs, about once a
// second. DELETE ../jobs/ID cancels a job, or deletes a finished one with its files;
// ../jobs/ID/files.zip downloads them all. An operator's token (DISCO_ADMIN_TOKENS) also gets a
// list of every job with cancel, pause and resume (../admin/...). The jobs live on the server: a
// reload, or a second browser with the same token, shows the same queue and gallery. With tokens (DISCO_API_TOKENS) every request carries
// "Authorization: Bearer TOKEN"; the page asks for the token when the server answers 401 and keeps
// it in localStorage. Pictures, videos and downloads are fetched with that header and shown as
// object URLs (an <img> or <video> cannot send it).
// The form is built from the server's settings.json: every setting's name, kind, default, meaning,
// limits and group come from the Settings fields, so a setting added there appears here with no
// edit of this page. On a server without a GPU (settings.json's device "cpu") the defaults are small
// ones, minutes on a CPU rather than hours.
"use strict";

const POLL_MS = 1000;
const STREAM_SILENT_MS = 15_000; // no byte (event or heartbeat) for this long: the stream is broken
const STREAM_RETRY_MS = 2000;
const TOKEN_KEY = "disco_token";

// Where a setting goes: these on top, in this order; the animation settings (group "motion") under
// "Motion"; every other one under "Advanced"; both in the server's order.
const MAIN = ["text_prompts", "width_height", "steps", "seed", "n_batches", "clip_guidance_scale"];
// Settings the page leaves out of the form and never sends, so the server's default holds:
// - output_dir is the folder the Python client saves to (the page offers downloads instead);
// - use_gpu: the server decides (DISCO_USE_GPU), whatever a request says;
// - resume_run, resume_from_frame: they continue from files in output_dir; the page has none.
const LEFT_OUT = new Set(["output_dir", "use_gpu", "resume_run", "resume_from_frame"]);
// Settings that are files (their kind): an upload, sent as a data: URI of the file's bytes.
const UPLOADS = { image: "image/*", video: "video/*", images: "image/*" };
// The job statuses this page tells apart; settings.json must list them (checked at load).
const FINISHED = new Set(["done", "cancelled", "failed", "abandoned", "shutdown"]);
const STATUSES_USED = ["queued", "waiting", "running", ...FINISHED];

const form = document.getElementById("settings");
const queueList = document.getElementById("queue");
const gallery = document.getElementById("gallery");
const fields = new Map(); // setting name -> { row (its settings.json entry), inputs, read(), write(value) }
const queueNodes = new Map(); // job id -> its <li> in the queue
const cards = new Map(); // "jobId/index" -> its <figure> in the gallery
let server = null; // settings.json

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ----- requests, with the token -----

let token = localStorage.getItem(TOKEN_KEY) || "";
let asking = null; // while the token dialog is open: settles once a token is given

// The token dialog; every request refused meanwhile waits for the same answer.
function askToken(message) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token");
  document.getElementById("token-message").textContent = message;
  input.value = "";
  asking = new Promise((resolve) => {
    document.getElementById("token-form").onsubmit = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      token = value;
      localStorage.setItem(TOKEN_KEY, token);
      dialog.close();
      asking = null;
      resolve();
    };
  });
  if (!dialog.open) dialog.showModal();
  input.focus();
  return asking;
}

// fetch() with the token; a 401 asks for a token (unless another one was given meanwhile) and tries again.
async function api(path, options = {}) {
  for (;;) {
    const sent = token;
    const headers = { ...(options.headers || {}) };
    if (sent) headers.Authorization = `Bearer ${sent}`;
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401) return response;
    const answer = await response.json().catch(() => ({}));
    const detail = answer.detail ? ` (${answer.detail})` : "";
    if (token === sent) {
      await askToken(answer.code === "token_required" ? `This server needs a token${detail}.`
        : `The server refused this token${detail}. Enter another one.`);
    }
  }
}

// The job views' URLs are paths on the gateway ("/jobs/..."): asked for relative to this page (at
// /ui/), so they also work behind a proxy that serves the service under a prefix.
function href(url) {
  return url.startsWith("/") ? `..${url}` : url;
}

async function fetchBlob(url) {
  const response = await api(href(url));
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return { blob: await response.blob(), disposition: response.headers.get("Content-Disposition") || "" };
}

// Show the server's picture or video ``url`` in ``element`` (an <img> or <video>) as an object URL;
// a new ``version`` (e.g. the step of a latest frame) fetches it again. The object URL it showed
// before is revoked. A failed fetch is tried again the next time.
const media = new WeakMap(); // element -> { key (shown), pending (being fetched), objectUrl }
function showMedia(element, url, version = "") {
  const key = `${url} ${version}`;
  const state = media.get(element) || {};
  media.set(element, state);
  if (!url || state.key === key || state.pending === key) return;
  state.pending = key;
  fetchBlob(url).then(({ blob }) => {
    if (state.pending !== key) return;
    state.pending = null;
    release(element);
    state.objectUrl = URL.createObjectURL(blob);
    state.key = key;
    element.dataset.src = url;
    element.src = state.objectUrl;
  }, () => {
    if (state.pending === key) state.pending = null;
  });
}

function release(element) {
  const state = media.get(element);
  if (state && state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  if (state) state.objectUrl = null;
}

function releaseAll(node) {
  for (const element of node.querySelectorAll("img, video")) release(element);
}

// The file name a Content-Disposition gives (RFC 6266): the exact one (filename*, UTF-8), else the
// plain one (ASCII), else null.
function dispositionName(disposition) {
  const exact = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
  if (exact) {
    try {
      return decodeURIComponent(exact[1]);
    } catch {
      // not percent-encoded UTF-8: the plain name below
    }
  }
  const plain = /filename="([^"]+)"/.exec(disposition);
  return plain ? plain[1] : null;
}

// A download link: the file is fetched with the token and saved under the server's name for it.
function downloadLink(url, text, name) {
  const link = el("a", { href: href(url), "data-url": url, download: name, text });
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    try {
      const { blob, disposition } = await fetchBlob(url);
      const objectUrl = URL.createObjectURL(blob);
      const save = el("a", { href: objectUrl, download: dispositionName(disposition) || name });
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(objectUrl), 60_000);
    } catch (error) {
      link.title = `the download failed: ${error.message}`;
      link.classList.add("failed");
    }
  });
  return link;
}

// ----- the form, from settings.json -----

function offered(row) {
  return !LEFT_OUT.has(row.name);
}

// A number field's text: undefined when empty (the server's default), a number, or the text itself
// (not a number: the server names what is wrong with it).
function numberIn(input) {
  const text = input.value.trim();
  if (text === "") return undefined;
  const value = Number(text);
  return Number.isNaN(value) ? text : value;
}

// The two inputs of a size: "width_height" -> width, height.
function sizeParts(name) {
  const parts = name.split("_");
  return parts.length === 2 ? parts : [`${name}_0`, `${name}_1`];
}

// A file's bytes as a data: URI (data:image/png;base64,...), as the job API takes files.
function dataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`${file.name || "the image"} cannot be read: ${reader.error}`));
    reader.readAsDataURL(file);
  });
}

// Prompts as one line: a list (of lines, or structured prompts {"text": ...}), or prompts by frame ({"0": [...], "10": [...]}).
function promptText(prompts) {
  if (Array.isArray(prompts)) return prompts.map((p) => (p && typeof p === "object" ? String(p.text) : p)).join(" | ");
  if (prompts && typeof prompts === "object") {
    return Object.entries(prompts).map(([frame, list]) => `${frame}: ${promptText(list)}`).join(" · ");
  }
  return prompts ? String(prompts) : "";
}

// The inputs of one setting, typed by its kind, with how to read and write its value.
function inputsFor(row) {
  const { name, kind } = row;
  if (UPLOADS[kind]) {
    // a file: its bytes go as a data: URI; a reused job's file is not sent back, so the note asks for it again;
    // image_prompts: several files, each sent as a data: URI with its weight after it ("data:...;base64,...:0.5",
    // the notebook's "path:weight"), the weight from a number field beside the file (1 unless changed)
    const several = kind === "images";
    const input = el("input", { id: name, name, type: "file", accept: UPLOADS[kind], ...(several ? { multiple: "" } : {}) });
    const note = el("p", { class: "upload-note", "data-note": name });
    const weights = several ? el("div", { class: "image-weights", "data-weights": name }) : null;
    const showWeights = () => {
      if (!weights) return;
      weights.replaceChildren(...[...input.files].map((file, i) => {
        const id = `${name}-weight-${i}`;
        const box = el("input", { id, type: "number", step: "any", value: "1", "data-file": file.name });
        box.title = `the weight of ${file.name} beside the text prompts' (negative: away from it)`;
        return el("div", { class: "image-weight" }, [
          el("label", { for: id, class: "part", text: `weight of ${file.name}` }), box,
        ]);
      }));
    };
    input.addEventListener("change", () => { note.textContent = ""; showWeights(); });
    const weighed = async (file, i) => {
      const uri = await dataUri(file);
      const box = weights && weights.querySelector(`#${CSS.escape(`${name}-weight-${i}`)}`);
      const weight = box ? box.value.trim() : "";
      return weight === "" ? uri : `${uri}:${weight}`; // an empty weight: the server's 1
    };
    const read = () => {
      if (!input.files.length) return undefined;
      return several ? Promise.all([...input.files].map(weighed)) : dataUri(input.files[0]);
    };
    return {
      inputs: [input], extra: weights ? [note, weights] : [note],
      read,
      write: () => { input.value = ""; note.textContent = ""; showWeights(); },
      remark: (text) => { note.textContent = text; },
    };
  }
  if (row.choices && kind === "texts") {
    // several of the choices (clip_models): a list to pick from, each with what it is for as its tooltip
    const meanings = row.choice_meanings || {};
    const select = el("select", { id: name, name, multiple: "", size: Math.min(row.choices.length, 8) });
    for (const option of row.choices) {
      select.append(el("option", { value: option, text: option, title: meanings[option] }));
    }
    return {
      inputs: [select],
      read: () => [...select.selectedOptions].map((option) => option.value),
      write: (v) => {
        const chosen = new Set(Array.isArray(v) ? v : [v]);
        for (const option of select.options) option.selected = chosen.has(option.value);
      },
    };
  }
  if (row.choices) {
    // each choice with what it is for (choice_meanings, e.g. the diffusion models): its tooltip, and
    // the chosen one's under the picker
    const meanings = row.choice_meanings || {};
    const select = el("select", { id: name, name });
    for (const option of row.choices) {
      select.append(el("option", { value: option, text: option, title: meanings[option] }));
    }
    const note = Object.keys(meanings).length ? el("p", { class: "choice-meaning", "data-meaning": name }) : null;
    const show = () => { if (note) note.textContent = meanings[select.value] || ""; };
    select.addEventListener("change", show);
    return {
      inputs: [select], extra: note ? [note] : [], read: () => select.value,
      write: (v) => { select.value = v ?? ""; show(); },
    };
  }
  if (kind === "bool") {
    const box = el("input", { id: name, name, type: "checkbox" });
    return { inputs: [box], read: () => box.checked, write: (v) => { box.checked = Boolean(v); } };
  }
  if (kind === "int" || kind === "float") {
    const input = el("input", { id: name, name, type: "number", step: kind === "float" ? "any" : "1" });
    if (row.low !== null) input.min = row.low;
    if (row.high !== null) input.max = row.high;
    return { inputs: [input], read: () => numberIn(input), write: (v) => { input.value = v ?? ""; } };
  }
  if (name === "text_prompts") {
    const area = el("textarea", { id: name, name, rows: 4 });
    const write = (v) => { area.value = promptsWritten(v); };
    return { inputs: [area], read: () => promptsRead(area.value), write };
  }
  if (kind === "texts" || kind === "model_schedules") {
    // one per line (clip_models_schedules: MODEL=SCHEDULE per line), or JSON {...} (text that does not
    // parse goes as typed: the server names it)
    const area = el("textarea", { id: name, name, rows: 4 });
    const read = () => {
      const text = area.value.trim();
      if (text.startsWith("{")) {
        try { return JSON.parse(text); } catch (error) { return text; }
      }
      return area.value.split("\n").map((line) => line.trim()).filter((line) => line);
    };
    const write = (v) => {
      if (v && typeof v === "object" && !Array.isArray(v)) area.value = JSON.stringify(v, null, 1);
      else area.value = Array.isArray(v) ? v.join("\n") : (v ?? "");
    };
    return { inputs: [area], read, write };
  }
  if (kind === "size") {
    const pair = sizeParts(name).map((part) => el("input", {
      id: part, name: part, type: "number", step: 64, min: 64,
    }));
    return {
      inputs: pair,
      read: () => pair.map(numberIn),
      write: (v) => pair.forEach((input, i) => { input.value = (v || [])[i] ?? ""; }),
    };
  }
  if (kind === "numbers") {
    // a list of numbers, separated by spaces or commas; text that is not numbers goes as typed (the server names it)
    const input = el("input", { id: name, name, type: "text" });
    const read = () => {
      const parts = input.value.split(/[\s,]+/).filter((part) => part);
      if (!parts.length) return undefined;
      return parts.every((part) => !Number.isNaN(Number(part))) ? parts.map(Number) : input.value;
    };
    return { inputs: [input], read, write: (v) => { input.value = Array.isArray(v) ? v.join(" ") : (v ?? ""); } };
  }
  // number_or_schedule, int_or_schedule, text, optional_text, and a kind this page does not know yet: text as typed
  const input = el("input", { id: name, name, type: "text" });
  const schedule = kind === "number_or_schedule" || kind === "int_or_schedule";
  const read = () => {
    const text = input.value.trim();
    if (text === "") return undefined; // the server's default
    return schedule && !Number.isNaN(Number(text)) ? Number(text) : text;
  };
  return { inputs: [input], read, write: (v) => { input.value = v ?? ""; } };
}

// text_prompts as typed: a prompt per line, "text:weight" (the weight a number or a schedule) or a
// structured prompt as JSON on its line ({"text": ..., "weight": ..., "clip_models": [...]}); or the
// whole text as JSON: the notebook's prompts by frame for an animation ({"0": [...], "100": [...]}),
// one structured prompt, or a list of prompts. Text that starts as JSON but does not parse, and whose
// first line is no structured prompt, goes as typed: the server names it.
function promptsRead(typed) {
  const text = typed.trim();
  if (text.startsWith("{") || text.startsWith("[")) {
    try {
      const value = JSON.parse(text);
      if (Array.isArray(value)) return value;
      if (value && typeof value === "object") return structuredPrompt(value) ? [value] : value;
    } catch (error) { /* a prompt per line, below */ }
  }
  const lines = typed.split("\n").map((line) => line.trim()).filter((line) => line);
  const read = lines.map((line) => {
    if (!line.startsWith("{")) return line;
    try {
      const value = JSON.parse(line);
      return structuredPrompt(value) ? value : line;
    } catch (error) { return line; }
  });
  if (text.startsWith("{") && typeof read[0] === "string") return text;
  return read;
}

// A prompt written as {"text": ..., "weight": ..., "clip_models": [...]} (one of those keys at least).
function structuredPrompt(value) {
  return Boolean(value) && typeof value === "object" && !Array.isArray(value)
    && ["text", "weight", "clip_models"].some((key) => key in value);
}

// text_prompts as the field shows them: a line per prompt, a structured one as JSON on its line;
// prompts by frame as JSON.
function promptsWritten(prompts) {
  if (Array.isArray(prompts)) return prompts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join("\n");
  if (prompts && typeof prompts === "object") return JSON.stringify(prompts, null, 1);
  return prompts ?? "";
}

function buildField(row) {
  const field = { row, ...inputsFor(row) };
  const title = row.allowed ? `${row.meaning}; allowed: ${row.allowed}` : row.meaning;
  for (const input of field.inputs) {
    input.title = title;
    if (row.default === null && input.type !== "file") input.placeholder = row.shown;
  }
  // the name, breakable after its underscores
  const name = row.name.split(/(?<=_)/).flatMap((part) => [part, el("wbr")]);
  const label = el("label", { for: field.inputs[0].id, title }, name);
  if (row.kind === "texts") {
    const how = row.choices ? "one or more" : row.name === "text_prompts"
      ? 'one per line ("text:weight" or {"text", "weight", "clip_models"}), or {frame: [...]} as JSON'
      : "one per line";
    label.append(" ", el("small", { text: how }));
  }
  if (UPLOADS[row.kind]) label.append(" ", el("small", { text: "a file to upload" }));
  let body = [...field.inputs, ...(field.extra || [])];
  if (row.kind === "size") {
    body = [el("div", { class: "row" }, field.inputs.map((input) =>
      el("div", {}, [el("label", { for: input.id, class: "part", text: input.id }), input])))];
  }
  const wide = row.kind === "texts" || row.kind === "size" || Boolean(UPLOADS[row.kind]);
  field.node = el("div", { class: `field ${row.kind}${wide ? " wide" : ""}`, "data-setting": row.name }, [
    label, el("p", { class: "hint", text: row.meaning }), ...body, el("p", { class: "error", "data-error": row.name }),
  ]);
  if ((server.schedule_settings || []).includes(row.name) && field.inputs[0].type !== "file") withPreview(field);
  field.write(row.default);
  fields.set(row.name, field);
  return field;
}

// ----- schedules: a plot of a setting's value over the 1000 virtual steps, as the server reads it -----

const PREVIEW_WAIT_MS = 300; // typing pauses this long before the server is asked
const MAX_PREVIEWS = 8; // plots per field (one per prompt line or MODEL=SCHEDULE entry)
const PLOT_W = 300;
const PLOT_H = 60;
const SVG = "http://www.w3.org/2000/svg";

// Under a setting whose value may be a schedule (settings.json's schedule_settings): a plot of each
// schedule it holds, redrawn as it is typed, and a line with the server's message for one it cannot read.
function withPreview(field) {
  const name = field.row.name;
  field.preview = {
    box: el("div", { class: "schedule-previews", "data-preview": name }),
    error: el("p", { class: "error", "data-preview-error": name, role: "status" }),
    timer: null, version: 0,
  };
  field.node.insertBefore(field.preview.box, field.node.querySelector(`[data-error="${CSS.escape(name)}"]`));
  field.node.insertBefore(field.preview.error, field.preview.box);
  field.inputs[0].addEventListener("input", () => previewSoon(field));
  const write = field.write;
  field.write = (value) => {
    write(value);
    previewSoon(field);
  };
}

function previewSoon(field) {
  clearTimeout(field.preview.timer);
  field.preview.timer = setTimeout(() => preview(field), PREVIEW_WAIT_MS);
}

// The values of a field that may hold a schedule, each previewed on its own: a prompt per line
// (text_prompts: a structured prompt as its object, prompts by frame as one object), MODEL=SCHEDULE
// entries (clip_models_schedules), or the one value. Only text with a "[" is sent: the server tells
// which of them are schedules and reads them; a structured prompt and prompts by frame always are.
function scheduleTexts(field) {
  const text = field.inputs[0].value;
  if (field.row.name === "text_prompts") {
    const prompts = promptsRead(text);
    if (typeof prompts === "string") return [];
    if (!Array.isArray(prompts)) return [prompts];
    return prompts.filter((p) => typeof p !== "string" || p.includes("[")).slice(0, MAX_PREVIEWS);
  }
  let parts = [text];
  if (field.row.kind === "texts") parts = text.trim().startsWith("{") ? [] : text.split("\n");
  else if (field.row.kind === "model_schedules") parts = text.trim().startsWith("{") ? [] : text.split(/[;\n]+/);
  return parts.map((part) => part.trim()).filter((part) => part.includes("[")).slice(0, MAX_PREVIEWS);
}

async function preview(field) {
  const { box, error } = field.preview;
  const version = ++field.preview.version;
  const texts = scheduleTexts(field);
  const answers = await Promise.all(texts.map((text) => previewOf(field.row.name, text)));
  if (version !== field.preview.version) return; // typed on meanwhile: a newer preview is on its way
  const problems = answers.filter((answer) => answer.problem).map((answer) => answer.problem);
  const shown = answers.flatMap((answer, i) => {
    if (answer.problem) return [];
    if (answer.frames) return [framePrompts(field, answer.frames)];
    if (answer.schedule) return [schedulePlot(field, texts[i], answer)];
    return typeof texts[i] === "object" ? [promptLine(answer)] : []; // a structured prompt of one weight
  });
  box.replaceChildren(...shown);
  error.textContent = problems.join(" ");
}

// The prompts by frame as the server read them: each frame key with the frames it holds for, and its
// prompts, a plot for a weight written as a schedule (MAX_PREVIEWS plots in all), a line for the others.
function framePrompts(field, frames) {
  let plots = 0;
  return el("div", { class: "frame-prompts" }, frames.map((frame, i) => {
    const first = i === 0 ? 0 : frame.frame;
    const span = frame.until === null ? `frames ${first} on` : `frames ${first} to ${frame.until}`;
    const prompts = frame.prompts.map((answer) => {
      if (answer.schedule && plots < MAX_PREVIEWS) {
        plots += 1;
        return schedulePlot(field, answer.text, answer);
      }
      return promptLine(answer);
    });
    return el("div", { class: "frame-key", "data-frame": frame.frame }, [
      el("p", { class: "frame-span", text: `frame ${frame.frame}: ${span}` }), ...prompts,
    ]);
  }));
}

// One prompt as a line: its text, its weight (or the range a schedule spans) and the CLIP models it applies to.
function promptLine(answer) {
  const weight = answer.low === answer.high ? `weight ${shortNumber(answer.low)}`
    : `weight ${shortNumber(answer.low)} to ${shortNumber(answer.high)}`;
  return el("p", { class: "prompt-weight", "data-prompt": answer.text, text: `${answer.text}: ${weight}${modelsNote(answer)}` });
}

function modelsNote(answer) {
  return answer.clip_models ? ` (${answer.clip_models.join(", ")} only)` : "";
}

// POST ../schedules/preview: the value at each virtual step as runs ([[value, count], ...]), or
// { problem } with the server's message (which names the setting).
async function previewOf(setting, value) {
  try {
    const response = await api("../schedules/preview", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ setting, value }),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) return { problem: answer.detail || `${setting}: cannot be previewed (HTTP ${response.status})` };
    return answer;
  } catch (failure) {
    return { problem: `${setting}: cannot be previewed (${failure.message})` };
  }
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function shortNumber(value) {
  return String(Number(value.toPrecision(4)));
}

// One schedule as a step line: x the virtual step (0 to 999), y the value (its least at the bottom,
// its greatest at the top), with the same in words for a screen reader.
function schedulePlot(field, text, answer) {
  const { runs, low, high, length } = answer;
  const onOff = field.row.kind === "bool_or_schedule" || field.row.kind === "model_schedules";
  const word = (value) => (onOff ? (value ? "on" : "off") : shortNumber(value));
  const x = (step) => shortNumber((step / length) * PLOT_W);
  const y = (value) => shortNumber(high === low ? PLOT_H / 2 : 2 + ((high - value) / (high - low)) * (PLOT_H - 4));
  const points = [];
  const words = [];
  let step = 0;
  for (const [value, count] of runs) {
    points.push(`${x(step)},${y(value)}`, `${x(step + count)},${y(value)}`);
    words.push(`${word(value)} at steps ${step} to ${step + count - 1}`);
    step += count;
  }
  const label = answer.text !== undefined ? answer.text + modelsNote(answer)
    : field.row.kind === "texts" ? text.replace(/:[^:]*$/, "").trim() : field.row.name;
  const described = `${label} over the ${length} virtual steps: ${words.slice(0, 6).join(", ")}`
    + (words.length > 6 ? `, and ${words.length - 6} more changes` : "");
  const plot = svg("svg", {
    class: "plot", viewBox: `0 0 ${PLOT_W} ${PLOT_H}`, preserveAspectRatio: "none", role: "img", "aria-label": described,
  });
  const title = svg("title");
  title.textContent = described;
  plot.append(title, svg("polyline", { class: "line", points: points.join(" ") }));
  return el("figure", { class: "schedule-plot", "data-schedule": typeof text === "string" ? text : JSON.stringify(text) }, [
    el("div", { class: "plot-values" }, [el("span", { text: word(high) }), el("span", { text: word(low) })]),
    plot,
    el("figcaption", {}, [el("span", { text: "step 0" }), el("span", { class: "plot-label", text: label }),
      el("span", { text: `step ${length - 1}` })]),
  ]);
}

function buildForm(rows) {
  const shown = rows.filter(offered);
  const main = document.getElementById("main-fields");
  for (const name of MAIN) {
    const row = shown.find((r) => r.name === name);
    if (row) main.append(buildField(row).node);
  }
  for (const row of shown) {
    if (MAIN.includes(row.name)) continue;
    const part = row.group === "motion" ? "motion-fields" : "advanced-fields";
    document.getElementById(part).append(buildField(row).node);
  }
}

function defaultOf(name) {
  const row = server.settings.find((r) => r.name === name);
  return row ? row.default : undefined;
}

// ----- the form <-> settings -----

// The settings the form holds; an empty field is left out, so the server's default holds.
async function readForm() {
  const settings = {};
  for (const [name, field] of fields) {
    const value = await field.read();
    if (value !== undefined) settings[name] = value;
  }
  return settings;
}

// Every field to these settings, the defaults where they have none (that makes the same image again).
function fillForm(settings) {
  for (const [name, field] of fields) field.write(name in settings ? settings[name] : field.row.default);
}

function clearErrors() {
  for (const p of document.querySelectorAll("[data-error]")) p.textContent = "";
  for (const input of form.querySelectorAll(".invalid")) input.classList.remove("invalid");
}

// The server's message under the setting it names (under the Paint button when it names none of the form's).
function showError(name, message) {
  const where = (name && document.querySelector(`[data-error="${CSS.escape(name)}"]`))
    || document.querySelector('[data-error="other"]');
  where.textContent = message;
  for (const input of (fields.get(name) || { inputs: [] }).inputs) input.classList.add("invalid");
  if (where.closest("details")) where.closest("details").open = true;
}

// ----- the job API -----

async function submit(event) {
  event.preventDefault();
  clearErrors();
  const paint = document.getElementById("paint");
  paint.disabled = true;
  try {
    const body = JSON.stringify(await readForm());
    const headers = { "Content-Type": "application/json" };
    const estimate = await api("../jobs/estimate", { method: "POST", headers, body });
    const told = await estimate.json().catch(() => ({}));
    const long = estimate.ok && told.long; // a long run on a server without GPU: it needs ?confirm=1
    if (long && !window.confirm(`${told.notice}\n\nQueue it anyway?`)) return;
    let response = await api(long ? "../jobs?confirm=1" : "../jobs", { method: "POST", headers, body });
    let answer = await response.json().catch(() => ({}));
    if (answer.code === "confirm_required" && window.confirm(`${answer.detail}\n\nQueue it anyway?`)) {
      response = await api("../jobs?confirm=1", { method: "POST", headers, body });
      answer = await response.json().catch(() => ({}));
    }
    if (!response.ok) showError(answer.setting, answer.detail || `the job was refused: HTTP ${response.status}`);
    else known(answer);
  } catch (error) {
    showError(null, `the job could not be sent: ${error.message}`);
  } finally {
    paint.disabled = false;
  }
}

// GoBig on a finished image: a new job that enlarges this very picture (its PNG as the init image,
// gobig_from_init) tile by tile with the image's own settings and the form's GoBig settings
// (gobig_scale, gobig_skip_ratio, gobig_overlap: at most what the image's size allows).
async function goBig(job, image, button) {
  clearErrors();
  button.disabled = true;
  try {
    const { blob } = await fetchBlob(image.png);
    const form = await readForm();
    const chosen = (name) => form[name] ?? defaultOf(name);
    const [width, height] = job.settings.width_height;
    const fits = Math.floor((Math.min(width, height) - 1) / 2); // less than half the smaller side
    const body = JSON.stringify({
      ...job.settings, seed: image.seed, n_batches: 1, init_image: await dataUri(blob),
      gobig: true, gobig_from_init: true, gobig_scale: chosen("gobig_scale"),
      gobig_skip_ratio: chosen("gobig_skip_ratio"), gobig_overlap: Math.min(chosen("gobig_overlap"), fits),
    });
    const response = await api("../jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) showError(answer.setting, answer.detail || `GoBig was refused: HTTP ${response.status}`);
    else known(answer);
  } catch (error) {
    showError(null, `GoBig could not be sent: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

async function cancelJob(id, node) {
  node.cancelling = true;
  node.parts.cancel.disabled = true;
  node.parts.cancel.textContent = "Cancelling…";
  try {
    const response = await api(`../jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    known(await response.json());
  } catch (error) {
    node.cancelling = false;
    node.parts.error.textContent = `the job could not be cancelled: ${error.message}`;
  }
}

// Delete a finished job and its files on the server.
async function deleteJob(id, button) {
  button.disabled = true;
  const response = await api(`../jobs/${encodeURIComponent(id)}`, { method: "DELETE" }).catch(() => null);
  if (response && response.ok) {
    jobs.delete(id);
    redraw();
  } else {
    button.disabled = false;
    button.title = `the job could not be deleted${response ? `: HTTP ${response.status}` : ""}`;
  }
}

// ----- the caller's jobs: read once, then followed by events -----

const jobs = new Map(); // job id -> the job as the server shows it

// A job as the server shows it now (from an answer or an event).
function known(job) {
  if (job && job.deleted) jobs.delete(job.id);
  else if (job && job.id) jobs.set(job.id, job);
  redraw();
}

function redraw() {
  draw([...jobs.values()].sort((a, b) => b.created - a.created || (b.id > a.id ? 1 : -1)));
}

let streaming = false; // the event stream is open and heard from
let lastEventId = null;

// Follow the caller's jobs with GET ../jobs/events (read with fetch, which can send the token),
// until it breaks; then poll until it opens again.
async function follow() {
  for (;;) {
    const controller = new AbortController();
    let watchdog = null;
    const quiet = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), STREAM_SILENT_MS);
    };
    try {
      const headers = lastEventId ? { "Last-Event-ID": lastEventId } : {};
      const response = await api("../jobs/events", { headers, signal: controller.signal });
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      quiet();
      streaming = true;
      clearTimeout(pollTimer);
      document.getElementById("connection").textContent = "";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        quiet();
        text += value;
        let end;
        while ((end = text.indexOf("\n\n")) >= 0) {
          heard(text.slice(0, end));
          text = text.slice(end + 2);
        }
      }
      throw new Error("the server closed the stream");
    } catch (error) {
      clearTimeout(watchdog);
      if (streaming || !pollTimer) poll(); // the stream broke: poll until it is back
      streaming = false;
      document.getElementById("connection").textContent = `following by polling (${error.message})`;
    }
    await new Promise((resolve) => setTimeout(resolve, STREAM_RETRY_MS));
  }
}

// One event's block of lines: "id: ...", "event: ...", "data: {...}" (comments start with ":").
function heard(block) {
  let data = null;
  for (const line of block.split("\n")) {
    if (line.startsWith("id: ")) lastEventId = line.slice(4);
    else if (line.startsWith("data: ")) data = JSON.parse(line.slice(6));
  }
  if (!data) return;
  if (data.type === "resync") poll(true);
  else if (data.type === "deleted") known({ id: data.job.id, deleted: true });
  else known(data.job);
}

let pollTimer = null;
let polling = false;
let pollAgain = false;

// One GET ../jobs: the queue and the gallery as the server has them. Called at start, when the
// event stream asks (resync), and about once a second while the stream is broken.
async function poll(once = false) {
  if (polling) {
    pollAgain = true;
    return;
  }
  clearTimeout(pollTimer);
  polling = true;
  const connection = document.getElementById("connection");
  try {
    const response = await api("../jobs");
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.detail || `HTTP ${response.status}`);
    jobs.clear();
    for (const job of answer.jobs) jobs.set(job.id, job);
    redraw();
    if (streaming) connection.textContent = "";
  } catch (error) {
    connection.textContent = `the jobs cannot be read: ${error.message}`;
  }
  polling = false;
  if (pollAgain) {
    pollAgain = false;
    poll(once);
  } else if (!streaming && !once) {
    pollTimer = setTimeout(poll, POLL_MS);
  } else {
    pollTimer = null;
  }
}

// ----- the queue and the gallery -----

// Put ``nodes`` in ``parent`` in this order, moving only those out of place (a playing video keeps playing).
function arrange(parent, nodes) {
  nodes.forEach((node, i) => {
    if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
  });
}

// Remove the nodes of ``map`` whose keys are not in ``keep``, with their object URLs.
function prune(map, keep) {
  for (const [key, node] of map) {
    if (keep.has(key)) continue;
    releaseAll(node);
    node.remove();
    map.delete(key);
  }
}

function draw(jobs) {
  const unfinished = jobs.filter((job) => !FINISHED.has(job.status)).reverse(); // oldest first: the order they run
  prune(queueNodes, new Set(unfinished.map((job) => job.id)));
  arrange(queueList, unfinished.map((job) => {
    const node = queueNodes.get(job.id) || queueNode(job);
    updateQueueNode(node, job);
    return node;
  }));
  document.getElementById("queue-empty").hidden = unfinished.length > 0;

  const shown = [];
  for (const job of jobs) {
    for (const image of job.images) {
      if (!inGallery(image)) continue;
      const key = `${job.id}/${image.index}`;
      // a card is made again when what it shows changed (e.g. a cancelled image's last step came after
      // its status), else kept as it is: its picture is not fetched again
      const shows = JSON.stringify([image.status, image.step, image.total, image.frames_done, image.png, image.mp4,
        (image.partials || []).length, (image.eye_views || []).length]);
      const before = cards.get(key);
      if (!before || before.dataset.shows !== shows) {
        if (before) {
          releaseAll(before);
          before.remove();
        }
        const card = jobCard(job, image);
        card.dataset.shows = shows;
        cards.set(key, card);
      }
      shown.push(key);
    }
  }
  prune(cards, new Set(shown));
  arrange(gallery, shown.map((key) => cards.get(key)));
}

// Finished images with something to show: done ones, and those that stopped (cancelled, failed...) after some frames.
function inGallery(image) {
  if (!FINISHED.has(image.status)) return false;
  return Boolean(image.png || image.mp4 || image.latest_frame || image.gif || (image.frame_pngs || []).length);
}

function queueNode(job) {
  const cancel = el("button", { type: "button", class: "secondary cancel", text: "Cancel" });
  const node = el("li", { class: "job", "data-job": job.id });
  node.parts = {
    head: el("div", { class: "job-head" }), cancel, images: el("ol", { class: "images" }),
    error: el("p", { class: "error" }), rows: new Map(),
  };
  cancel.addEventListener("click", () => cancelJob(job.id, node));
  node.append(el("div", { class: "job-top" }, [node.parts.head, cancel]), node.parts.error, node.parts.images);
  queueNodes.set(job.id, node);
  return node;
}

function updateQueueNode(node, job) {
  const { head, images, rows } = node.parts;
  node.dataset.status = job.status;
  const mode = job.settings.animation_mode;
  head.replaceChildren(
    el("span", { class: `status ${job.status}`, text: job.status }),
    el("span", { class: "position", text: job.position ? `place ${job.position} in line` : null }),
    el("span", { class: "what", text: mode && mode !== "None" ? `${mode} animation` : null }),
    el("div", { class: "prompts", text: promptText(job.settings.text_prompts).slice(0, 120) }),
  );
  if (!node.cancelling) node.parts.cancel.textContent = "Cancel";
  node.parts.cancel.disabled = Boolean(node.cancelling);
  arrange(images, job.images.map((image) => {
    let row = rows.get(image.index);
    if (!row) {
      row = el("li", { class: "image", "data-index": image.index });
      row.preview = el("img", { class: "preview", alt: "the latest frame" });
      row.info = el("div", { class: "info" });
      row.append(el("div", { class: "preview-box" }, [row.preview]), row.info);
      rows.set(image.index, row);
    }
    updateImageRow(row, image);
    return row;
  }));
}

function updateImageRow(row, image) {
  row.dataset.status = image.status;
  const lines = [el("div", {}, [
    el("span", { class: `status ${image.status}`, text: image.status }), ` · seed ${image.seed}`,
  ])];
  if (image.frames) {
    // an animation: the frame being made, 1-based for people
    const frame = image.frame === null || image.frame === undefined ? null : image.frame + 1;
    const made = `${image.frames_done || 0} frames done`;
    const text = frame === null ? made : `frame ${frame} of ${image.frames} · ${made}`;
    lines.push(el("div", { class: "frames", text }));
  }
  if (image.total) {
    const bar = el("progress", { max: image.total });
    bar.value = image.step || 0;
    const left = image.eta_s === null || image.eta_s === undefined ? "" : ` · about ${Math.round(image.eta_s)} s left`;
    lines.push(bar, el("div", { class: "steps", text: `step ${image.step || 0} of ${image.total}${left}` }));
  } else if (image.status === "waiting") {
    lines.push(el("div", { class: "steps", text: "waiting for a sampler" }));
  }
  if (image.error) lines.push(el("div", { class: "error", text: image.error }));
  row.info.replaceChildren(...lines);
  if (image.latest_frame) showMedia(row.preview, image.latest_frame, `${image.frame ?? ""}/${image.step ?? ""}`);
}

// A finished image of a job: its picture (or the animation's video), what it is, its downloads and
// "Reuse these settings" (that image's seed, one image).
function jobCard(job, image) {
  const settings = { ...job.settings, seed: image.seed, n_batches: 1 };
  const animated = Boolean(image.frames) || Boolean(image.mp4);
  const frames = image.frame_pngs || [];
  const stem = `reverse_diffusion-${image.seed}_${image.index}`;
  const downloads = [];
  if (image.png) downloads.push(downloadLink(image.png, "PNG", `${stem}.png`));
  if (image.mp4) downloads.push(downloadLink(image.mp4, "MP4", `${stem}.mp4`));
  if (image.gif) downloads.push(downloadLink(image.gif, "GIF", `${stem}.gif`));
  if (image.sprite) downloads.push(downloadLink(image.sprite, "sprite sheet", `${stem}-sprite.png`));
  // a batch (batch_size above 1, sent with client.py): the batch's further images, each its own PNG
  for (const other of image.batch || []) {
    if (other.png) downloads.push(downloadLink(other.png, `batch image ${other.position}`, `${stem}_${other.position}.png`));
  }
  let status = image.status;
  if (image.status !== "done") {
    const at = animated ? `after ${image.frames_done || 0} of ${image.frames} frames`
      : image.step ? `at step ${image.step} of ${image.total}` : "";
    status = `${image.status} ${at}`.trim();
  }
  const card = galleryCard(settings, status, {
    picture: image.png || frames[frames.length - 1] || image.latest_frame, video: image.mp4, downloads,
    frames, initImage: job.init_image, hadVideo: job.video, animation: animated ? `${job.settings.animation_mode} animation` : null,
    eyes: image.eye_views || [], partials: image.partials || [],
  });
  card.dataset.job = job.id;
  card.dataset.index = image.index;
  card.dataset.status = image.status;
  const remove = el("button", { type: "button", class: "secondary delete", text: "Delete job" });
  remove.addEventListener("click", () => deleteJob(job.id, remove));
  const all = downloadLink(`/jobs/${encodeURIComponent(job.id)}/files.zip`, "Download all", `disco-${job.id}.zip`);
  const actions = [all, remove];
  if (!animated && image.status === "done" && image.png && !job.settings.gobig) { // an enlarged image is not enlarged again
    const enlarge = el("button", { type: "button", class: "secondary gobig", text: "GoBig" });
    enlarge.title = "Enlarge this image and diffuse it again tile by tile (the form's gobig_scale, gobig_skip_ratio, gobig_overlap)";
    enlarge.addEventListener("click", () => goBig(job, image, enlarge));
    actions.unshift(enlarge);
  }
  card.append(el("div", { class: "links job-actions" }, actions));
  return card;
}

// One picture in the gallery: what it shows, "reuse these settings", its downloads.
function galleryCard(settings, status, files) {
  const seed = settings.seed;
  const value = (name) => settings[name] ?? defaultOf(name);
  const lines = [
    `seed ${seed} · ${status}`,
    `${(value("width_height") || []).join("x")}, ${value("steps")} steps, guidance ${value("clip_guidance_scale")}`,
    promptText(settings.text_prompts),
  ];
  if (files.animation) lines.splice(1, 0, files.animation);
  const reuse = el("button", { type: "button", class: "reuse", text: "Reuse these settings" });
  reuse.addEventListener("click", () => {
    clearErrors();
    fillForm(settings);
    if (files.initImage && fields.has("init_image")) {
      fields.get("init_image").remark("This image started from an init image, which is not sent back: choose it again.");
    }
    if ((settings.image_prompts || []).length && fields.has("image_prompts")) {
      fields.get("image_prompts").remark("This image was painted towards image prompts, which a file field cannot be given back: choose them again.");
    }
    if (files.hadVideo && fields.has("video_init_path")) {
      fields.get("video_init_path").remark("This animation started from a video: choose it again.");
    }
    window.scrollTo(0, 0);
  });
  let picture;
  if (files.video) {
    picture = el("video", { controls: "", loop: "", muted: "", autoplay: "", playsinline: "" });
    picture.muted = true; // the attribute alone does not mute a video made by script
    showMedia(picture, files.video);
  } else {
    picture = el("img", { alt: `seed ${seed}` });
    showMedia(picture, files.picture);
  }
  const parts = [picture, ...lines.map((line) => el("div", { text: line })), el("div", { class: "links" }, files.downloads)];
  if (files.frames && files.frames.length) {
    const list = files.frames.map((url, i) => downloadLink(url, `frame ${i + 1}`, `frame${String(i).padStart(4, "0")}.png`));
    parts.push(el("details", { class: "frames" }, [
      el("summary", { text: `${files.frames.length} frames` }), el("div", { class: "links" }, list),
    ]));
  }
  if (files.eyes && files.eyes.length) parts.push(eyeViews(files.eyes));
  if (files.partials && files.partials.length) parts.push(partialSaves(files.partials));
  const details = el("details", {}, [el("summary", { text: "settings" }),
    el("pre", { text: JSON.stringify(settings, null, 1) })]);
  parts.push(reuse, details);
  return el("figure", { class: `picture ${status.split(" ")[0]}`, "data-seed": String(seed) }, parts);
}

// A VR animation's eye views: the last frame's pair side by side (fetched when opened), every pair as links.
function eyeViews(eyes) {
  const last = eyes[eyes.length - 1];
  const pair = ["l", "r"].map((eye) => el("img", { alt: `frame ${last.frame + 1}, ${eye === "l" ? "left" : "right"} eye` }));
  const links = eyes.map((views) => el("span", { class: "eye-links" }, [
    `frame ${views.frame + 1}: `,
    ...["l", "r"].filter((eye) => views[eye]).map((eye) => downloadLink(
      views[eye], eye === "l" ? "left" : "right", `frame${String(views.frame).padStart(4, "0")}_${eye}.png`,
    )),
  ]));
  const box = el("details", { class: "eye-views" }, [
    el("summary", { text: `VR eye views (${eyes.length} frame${eyes.length === 1 ? "" : "s"})` }),
    el("div", { class: "eye-pair" }, pair), el("div", { class: "links" }, links),
  ]);
  box.addEventListener("toggle", () => {
    if (box.open) pair.forEach((img, i) => showMedia(img, last[i ? "r" : "l"]));
  });
  return box;
}

// The steps intermediate_saves kept: links, each named by its frame and the notebook's end (NN% or the step).
function partialSaves(partials) {
  const list = partials.map((save) => {
    const at = /%$/.test(save.end) ? save.end : `step ${Number(save.end)}`;
    const text = save.frame === null || save.frame === undefined ? at : `frame ${save.frame + 1} · ${at}`;
    return downloadLink(save.url, text, decodeURIComponent(save.url.split("/").pop()));
  });
  return el("details", { class: "partials" }, [
    el("summary", { text: `${partials.length} intermediate saves` }), el("div", { class: "links" }, list),
  ]);
}

// The images already in the server's output folder (when it has one), after the jobs' own.
async function loadSavedImages() {
  const response = await api("outputs");
  if (!response.ok) return;
  const { images } = await response.json();
  const path = (name) => name && `outputs/${encodeURIComponent(name)}`;
  const saved = document.getElementById("saved");
  for (const image of images) {
    const stem = image.name.replace(/\.png$/, "");
    const downloads = [downloadLink(path(image.name), "PNG", image.name)];
    if (image.gif) downloads.push(downloadLink(path(image.gif), "GIF", image.gif));
    if (image.sprite) downloads.push(downloadLink(path(image.sprite), "sprite sheet", `${stem}-sprite.png`));
    saved.append(galleryCard({ ...image.settings, n_batches: 1 }, "saved", { picture: path(image.name), downloads }));
  }
}

// ----- the operator's view (shown to a token of DISCO_ADMIN_TOKENS) -----

async function operatorView() {
  const first = await api("../admin/queue");
  if (!first.ok) return; // not an operator
  const section = document.getElementById("operator");
  section.hidden = false;
  const state = document.getElementById("operator-state");
  const list = document.getElementById("operator-jobs");
  const act = async (path, options = { method: "POST" }) => {
    await api(path, options);
    refresh();
  };
  document.getElementById("operator-pause").onclick = () => act("../admin/pause");
  document.getElementById("operator-resume").onclick = () => act("../admin/resume");
  document.getElementById("operator-drain").onclick = () => act("../admin/drain");
  async function refresh() {
    const queue = await (await api("../admin/queue")).json();
    const switches = [queue.paused ? "paused" : "running", queue.draining ? "draining" : null].filter(Boolean);
    state.textContent = `${switches.join(", ")} · ${queue.queued} queued · ${queue.in_flight} of ${queue.slots} in flight`;
    const answer = await (await api("../admin/jobs?limit=100")).json();
    list.replaceChildren(...answer.jobs.map((job) => {
      const cancel = el("button", { type: "button", class: "secondary", text: "Cancel" });
      cancel.disabled = FINISHED.has(job.status);
      cancel.onclick = () => act(`../admin/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
      return el("li", { "data-job": job.id }, [
        el("span", { class: `status ${job.status}`, text: job.status }),
        ` ${job.owner} · ${job.images.length} image(s) · ${promptText(job.settings.text_prompts).slice(0, 60)} `, cancel,
      ]);
    }));
  }
  // refreshed while its panel is open only: the operator's list is not the caller's own events
  setInterval(() => { if (section.open) refresh().catch(() => {}); }, 5000);
  section.addEventListener("toggle", () => { if (section.open) refresh().catch(() => {}); });
}

// ----- start: the server's settings, then the form -----

function requireNames(what, listed, used) {
  const missing = used.filter((name) => !listed.includes(name));
  if (missing.length) throw new Error(`the server's ${what} lack ${missing.join(", ")}, which this page uses`);
}

async function start() {
  try {
    const response = await fetch("settings.json");
    if (!response.ok) throw new Error(`settings.json: HTTP ${response.status}`);
    server = await response.json();
    requireNames("job statuses", server.job_statuses, STATUSES_USED);
    buildForm(server.settings);
  } catch (error) {
    document.querySelector('[data-error="other"]').textContent = `The form could not be built: ${error.message}`;
    return;
  }
  form.addEventListener("submit", submit);
  // the token dialog stays until a token is given: nothing else works without one
  document.getElementById("token-dialog").addEventListener("cancel", (event) => event.preventDefault());
  document.getElementById("paint").disabled = false;
  await poll(true);
  follow();
  loadSavedImages().catch(() => {});
  operatorView().catch(() => {});
}

start();
