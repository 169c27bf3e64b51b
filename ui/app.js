// The page talks to the Flow's REST API on this same address: POST /post with an execEndpoint.
// /generate paints one image per request; /progress and /cancel go to the executor that keeps the
// job board (targetExecutor). The form is built from the server's settings.json: every setting's
// name, kind, default, meaning and limits come from the Settings fields, so a setting added there
// appears here with no edit of this page.
"use strict";

const POLL_MS = 700;
const MAX_SENT = 2; // images in flight at once; the rest wait here (browsers open few connections per host)

// Where a setting goes: these on top, in this order; every other one under "Advanced", in the server's order.
const MAIN = ["text_prompts", "width_height", "steps", "seed", "n_batches", "clip_guidance_scale"];
// Settings the page leaves out of the form and never sends, so the server's default holds:
// - an image setting (init_image) is a path or URL on the caller's machine, read by the Python
//   client, which sends the server only the image's bytes; a page has no such path;
// - output_dir is the folder the Python client saves to (the page offers downloads instead; the
//   server's own folder is its DISCO_OUTPUT_DIR);
// - use_gpu: the server decides (DISCO_USE_GPU), whatever a request says.
const LEFT_OUT_KINDS = new Set(["image", "video"]); // files on the caller's machine: the page has no upload yet
const LEFT_OUT = new Set(["output_dir", "use_gpu", "resume_run", "resume_from_frame"]); // the server has no files of this page's to resume
// The names of the wire protocol the page relies on; settings.json must list them (checked at load).
const TAGS_USED = ["batch_index", "run_seed"];
const STATUSES_USED = ["waiting", "running", "done", "cancelled", "failed"];

const form = document.getElementById("settings");
const queueList = document.getElementById("queue");
const gallery = document.getElementById("gallery");
const jobs = [];
const fields = new Map(); // setting name -> { row (its settings.json entry), inputs, read(), write(value) }
let server = null; // settings.json

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ----- the form, from settings.json -----

function offered(row) {
  return !LEFT_OUT_KINDS.has(row.kind) && !LEFT_OUT.has(row.name);
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

// The inputs of one setting, typed by its kind, with how to read and write its value.
function inputsFor(row) {
  const { name, kind } = row;
  if (row.choices) {
    // each choice with what it is for (choice_meanings, e.g. the diffusion models): its tooltip, and
    // the chosen one's under the picker
    const meanings = row.choice_meanings || {};
    const select = el("select", { id: name, name });
    for (const option of row.choices) {
      select.append(el("option", { value: option, text: option, ...(meanings[option] ? { title: meanings[option] } : {}) }));
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
  if (kind === "texts") {
    const area = el("textarea", { id: name, name, rows: 4 });
    return {
      inputs: [area],
      read: () => area.value.split("\n").map((line) => line.trim()).filter((line) => line),
      write: (v) => { area.value = Array.isArray(v) ? v.join("\n") : (v ?? ""); },
    };
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

function buildField(row) {
  const field = { row, ...inputsFor(row) };
  const title = row.allowed ? `${row.meaning}; allowed: ${row.allowed}` : row.meaning;
  for (const input of field.inputs) {
    input.title = title;
    if (row.default === null && input.placeholder !== undefined) input.placeholder = row.shown;
  }
  // the name, breakable after its underscores
  const name = row.name.split(/(?<=_)/).flatMap((part) => [part, el("wbr")]);
  const label = el("label", { for: field.inputs[0].id, title }, name);
  if (row.kind === "texts") label.append(" ", el("small", { text: "one per line" }));
  let body = [...field.inputs, ...(field.extra || [])];
  if (row.kind === "size") {
    body = [el("div", { class: "row" }, field.inputs.map((input) =>
      el("div", {}, [el("label", { for: input.id, class: "part", text: input.id }), input])))];
  }
  const wide = row.kind === "texts" || row.kind === "size";
  field.node = el("div", { class: `field ${row.kind}${wide ? " wide" : ""}`, "data-setting": row.name }, [
    label, el("p", { class: "hint", text: row.meaning }), ...body, el("p", { class: "error", "data-error": row.name }),
  ]);
  field.write(row.default);
  fields.set(row.name, field);
  return field;
}

function buildForm(rows) {
  const main = document.getElementById("main-fields");
  const advanced = document.getElementById("advanced-fields");
  const shown = rows.filter(offered);
  for (const name of MAIN) {
    const row = shown.find((r) => r.name === name);
    if (row) main.append(buildField(row).node);
  }
  for (const row of shown) if (!MAIN.includes(row.name)) advanced.append(buildField(row).node);
}

function defaultOf(name) {
  const row = server.settings.find((r) => r.name === name);
  return row ? row.default : undefined;
}

// ----- the form <-> settings -----

// The settings the form holds; an empty field is left out, so the server's default holds.
function readForm() {
  const settings = {};
  for (const [name, field] of fields) {
    const value = field.read();
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

function showError(message) {
  // the server's message starts with the setting's name: "steps: must be in [1, 1000], got 0"
  const name = message.split(":")[0].trim();
  const where = document.querySelector(`[data-error="${CSS.escape(name)}"]`)
    || document.querySelector('[data-error="other"]');
  where.textContent = message;
  for (const input of (fields.get(name) || { inputs: [] }).inputs) input.classList.add("invalid");
  if (where.closest("details")) where.closest("details").open = true;
}

// ----- talking to the Flow -----

async function post(body) {
  const response = await fetch("../post", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  const status = answer.header && answer.header.status;
  if (status && status.code) {
    const exc = status.exception || {};
    const error = new Error((exc.args && exc.args[0]) || status.description || "the request failed");
    error.settings = exc.name === "SettingsError";
    throw error;
  }
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return answer.data || [];
}

function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// One Document per image, tagged as the Python client tags them: the settings, the image's own seed
// (seed + i) and the run's bookkeeping (batch_index, run_seed). With the seed field empty, each image
// is sent with seed null: the server picks it and reports it in the answer's tags.
function submit(event) {
  event.preventDefault();
  clearErrors();
  const settings = readForm();
  const seed = settings.seed ?? null;
  const n = Number.isInteger(settings.n_batches) && settings.n_batches > 0 ? settings.n_batches : 1;
  if (Number.isInteger(seed) && seed + n - 1 > server.max_seed) {
    showError(`seed: seed + n_batches - 1 must be at most ${server.max_seed}, got seed ${seed} with n_batches ${n}`);
    return;
  }
  const run = [];
  for (let i = 0; i < n; i++) {
    const own = typeof seed === "number" ? seed + i : seed;
    const job = {
      id: newId(), run, index: i, seed: own, status: "waiting", settings: { ...settings, seed: own }, sent: false,
    };
    job.tags = { ...job.settings, batch_index: i };
    if (seed !== null) job.tags.run_seed = seed;
    run.push(job);
    jobs.push(job);
    addToQueue(job);
  }
  pump();
}

function pump() {
  const sent = jobs.filter((j) => j.sent && !j.finished).length;
  const next = jobs.filter((j) => !j.sent && j.status === "waiting").slice(0, Math.max(0, MAX_SENT - sent));
  for (const job of next) generate(job);
}

async function generate(job) {
  job.sent = true;
  job.sentAt = Date.now();
  try {
    const [doc] = await post({
      execEndpoint: "/generate", data: [{ id: job.id, tags: job.tags }], parameters: { animations: true },
    });
    job.doc = doc;
    job.status = doc.tags.status || "done";
    if (doc.tags.seed !== undefined && doc.tags.seed !== null) {
      job.seed = doc.tags.seed; // the server's pick when none was given
      job.settings.seed = doc.tags.seed;
    }
    if (doc.tags.error) job.error = doc.tags.error;
    if (doc.uri) addToGallery(job);
  } catch (error) {
    job.status = "failed";
    job.error = error.message;
    if (error.settings) {
      showError(error.message);
      for (const other of job.run) {
        if (!other.sent && other.status === "waiting") Object.assign(other, { status: "failed", error: error.message });
      }
    }
  }
  job.finished = true;
  for (const other of job.run) render(other);
  pump();
}

async function cancel(job) {
  if (!job.sent) {
    job.status = "cancelled";
    render(job);
    pump();
    return;
  }
  job.cancelling = true;
  render(job);
  await post({ execEndpoint: "/cancel", targetExecutor: server.job_state_executor, data: [{ id: job.id }] })
    .catch(() => {});
}

async function poll() {
  const watched = jobs.filter((j) => j.sent && !j.finished);
  const target = server.job_state_executor;
  if (watched.length) {
    try {
      const states = await post({
        execEndpoint: "/progress", targetExecutor: target, data: watched.map((j) => ({ id: j.id })),
      });
      const fresh = [];
      for (const state of states) {
        const job = watched.find((j) => j.id === state.id);
        if (!job || job.finished) continue;
        job.state = state.tags;
        if (state.tags.status === "running" && job.status === "waiting") {
          job.status = "running";
          job.startedAt = Date.now();
        }
        if (state.tags.frame_step && state.tags.frame_step !== job.frameStep) fresh.push(job);
        render(job);
      }
      if (fresh.length) {
        const frames = await post({
          execEndpoint: "/progress", targetExecutor: target, data: fresh.map((j) => ({ id: j.id })),
          parameters: { frame: true },
        });
        for (const frame of frames) {
          const job = fresh.find((j) => j.id === frame.id);
          if (job && frame.uri && !job.finished) {
            job.preview = frame.uri;
            job.frameStep = frame.tags.frame_step;
            render(job);
          }
        }
      }
    } catch (error) {
      // progress is best effort: the job's own answer decides
    }
  }
  setTimeout(poll, POLL_MS);
}

// ----- the queue and the gallery -----

function addToQueue(job) {
  job.node = el("li", { class: "job", "data-job": job.id });
  queueList.append(job.node);
  render(job);
}

function eta(job) {
  const step = Number(job.state && job.state.step) || 0;
  const total = Number(job.state && job.state.total) || 0;
  if (!step || !total || !job.startedAt) return "";
  const left = ((Date.now() - job.startedAt) / step) * (total - step) / 1000;
  return ` · about ${Math.max(0, Math.round(left))} s left`;
}

function render(job) {
  const step = Math.round(Number(job.state && job.state.step) || 0);
  const total = Math.round(Number(job.state && job.state.total) || 0);
  const preview = (job.doc && job.doc.uri) || job.preview;
  // the latest frame; an empty square until there is one
  const image = preview
    ? el("img", { alt: "latest frame", class: "preview", src: preview })
    : el("div", { class: "preview" });
  const text = Array.isArray(job.settings.text_prompts) ? job.settings.text_prompts.join(" | ") : "";
  const seed = job.seed ?? "chosen by the server";
  const info = el("div", {}, [
    el("div", { class: `status ${job.status}`, text: job.status + (job.cancelling && !job.finished ? " (cancelling)" : "") }),
    el("div", { text: `seed ${seed} · ${text.slice(0, 80)}` }),
  ]);
  if (job.status === "running" || (total && !job.finished)) {
    const bar = el("progress", { max: total || 1 });
    bar.value = step;
    info.append(bar, el("div", { class: "steps", text: `step ${step} of ${total}${eta(job)}` }));
  }
  if (job.error) info.append(el("div", { class: "error", text: job.error }));
  const actions = el("div");
  if (!job.finished && job.status !== "cancelled" && job.status !== "failed") {
    const button = el("button", { type: "button", class: "secondary cancel", text: "Cancel" });
    button.addEventListener("click", () => cancel(job));
    actions.append(button);
  }
  job.node.replaceChildren(image, info, actions);
}

function fileName(job) {
  const name = job.settings.batch_name ? `-${job.settings.batch_name}` : "";
  return `reverse_diffusion${name}-${job.seed}`;
}

function addToGallery(job) {
  const doc = job.doc;
  galleryCard({ ...job.settings, n_batches: 1 }, job.status, {
    png: doc.uri, gif: doc.tags.gif, sprite: doc.tags.sprite, stem: fileName(job),
  });
}

// One picture in the gallery: what it shows, "reuse these settings", its downloads.
function galleryCard(settings, status, files, atEnd = false) {
  const seed = settings.seed;
  const value = (name) => settings[name] ?? defaultOf(name);
  const lines = [
    `seed ${seed} · ${status}`,
    `${(value("width_height") || []).join("x")}, ${value("steps")} steps, guidance ${value("clip_guidance_scale")}`,
    (settings.text_prompts || []).join(" | "),
  ];
  const reuse = el("button", { type: "button", class: "reuse", text: "Reuse these settings" });
  reuse.addEventListener("click", () => { clearErrors(); fillForm(settings); window.scrollTo(0, 0); });
  const links = el("div", { class: "links" }, [el("a", { href: files.png, download: `${files.stem}.png`, text: "PNG" })]);
  if (files.gif) links.append(el("a", { href: files.gif, download: `${files.stem}.gif`, text: "GIF" }));
  if (files.sprite) {
    links.append(el("a", { href: files.sprite, download: `${files.stem}-sprite.png`, text: "sprite sheet" }));
  }
  const details = el("details", {}, [el("summary", { text: "settings" }),
    el("pre", { text: JSON.stringify(settings, null, 1) })]);
  const card = el("figure", { class: "picture", "data-seed": String(seed) }, [
    el("img", { src: files.png, alt: `seed ${seed}` }),
    ...lines.map((line) => el("div", { text: line })), links, reuse, details,
  ]);
  if (atEnd) gallery.append(card); else gallery.prepend(card);
}

// The images already in the server's output folder (when it has one), after this page's own.
async function loadSavedImages() {
  const response = await fetch("outputs");
  if (!response.ok) return;
  const { images } = await response.json();
  const href = (name) => name && `outputs/${encodeURIComponent(name)}`;
  for (const image of images) {
    galleryCard({ ...image.settings, n_batches: 1 }, "saved", {
      png: href(image.name), gif: href(image.gif), sprite: href(image.sprite), stem: image.name.replace(/\.png$/, ""),
    }, true);
  }
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
    requireNames("request tags", server.request_tags, TAGS_USED);
    requireNames("job statuses", server.job_statuses, STATUSES_USED);
    buildForm(server.settings);
  } catch (error) {
    document.querySelector('[data-error="other"]').textContent = `The form could not be built: ${error.message}`;
    return;
  }
  form.addEventListener("submit", submit);
  document.getElementById("paint").disabled = false;
  poll();
  loadSavedImages();
}

start();
