// The page talks to the Flow's REST API on this same address: POST /post with an execEndpoint.
// /generate paints one image per request; /progress and /cancel go to the renderer (targetExecutor).
"use strict";

const POLL_MS = 700;
const MAX_SENT = 2; // images in flight at once; the rest wait here (browsers open few connections per host)

// The advanced settings: name, kind, default (the server's defaults).
const ADVANCED = [
  ["skip_steps", "int", 10], ["display_rate", "int", 10],
  ["init_scale", "float", 1000], ["tv_scale", "float", 0],
  ["range_scale", "float", 150], ["sat_scale", "float", 0],
  ["cutn_batches", "int", 4], ["eta", "float", 0.8],
  ["cut_overview", "text", "[12]*400+[4]*600"], ["cut_innercut", "text", "[4]*400+[12]*600"],
  ["cut_ic_pow", "number-or-text", "1"], ["cut_icgray_p", "text", "[0.2]*400+[0]*600"],
  ["clamp_max", "float", 0.05], ["rand_mag", "float", 0.05],
  ["diffusion_sampling_mode", ["ddim", "plms"], "ddim"],
  ["diffusion_model", ["512x512_diffusion_uncond_finetune_008100", "256x256_diffusion_uncond"],
    "512x512_diffusion_uncond_finetune_008100"],
  ["perlin_mode", ["mixed", "colored", "gray"], "mixed"],
  ["style", "text", ""], ["artist", "text", ""], ["batch_name", "text", ""],
  ["perlin_init", "bool", false], ["clamp_grad", "bool", true],
  ["randomize_class", "bool", true], ["clip_denoised", "bool", false],
  ["fuzzy_prompt", "bool", false], ["use_secondary_model", "bool", true], ["skip_augs", "bool", false],
];
const MAIN_NUMBERS = [["steps"], ["n_batches"], ["clip_guidance_scale"]];

const form = document.getElementById("settings");
const queueList = document.getElementById("queue");
const gallery = document.getElementById("gallery");
const jobs = [];

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function buildAdvanced() {
  const box = document.getElementById("advanced-fields");
  for (const [name, kind, value] of ADVANCED) {
    let input;
    if (Array.isArray(kind)) {
      input = el("select", { id: name, name });
      for (const option of kind) input.append(el("option", { value: option, text: option }));
      input.value = value;
    } else if (kind === "bool") {
      input = el("input", { id: name, name, type: "checkbox" });
      input.checked = value;
    } else {
      input = el("input", { id: name, name, type: kind === "int" || kind === "float" ? "number" : "text" });
      if (kind === "float") input.step = "any";
      input.value = value;
    }
    box.append(el("div", {}, [el("label", { for: name, text: name }), input,
      el("p", { class: "error", "data-error": name })]));
  }
}

// ----- the form <-> settings -----

function numberOf(name) {
  const text = form.elements[name].value.trim();
  if (text === "") return undefined; // the server's default
  const value = Number(text);
  return Number.isNaN(value) ? text : value; // not a number: the server names what is wrong with it
}

function readForm() {
  const settings = {
    text_prompts: form.elements.text_prompts.value.split("\n").map((p) => p.trim()).filter((p) => p),
    width_height: [numberOf("width"), numberOf("height")],
  };
  for (const [name] of MAIN_NUMBERS) {
    const value = numberOf(name);
    if (value !== undefined) settings[name] = value;
  }
  for (const [name, kind] of ADVANCED) {
    const input = form.elements[name];
    if (kind === "bool") settings[name] = input.checked;
    else if (kind === "int" || kind === "float") {
      const value = numberOf(name);
      if (value !== undefined) settings[name] = value;
    } else if (kind === "number-or-text") {
      const text = input.value.trim();
      if (text) settings[name] = Number.isNaN(Number(text)) ? text : Number(text);
    } else if (input.value.trim() || Array.isArray(kind)) {
      settings[name] = input.value.trim();
    }
  }
  const seed = numberOf("seed");
  return { settings, seed };
}

function fillForm(settings) {
  form.elements.text_prompts.value = (settings.text_prompts || []).join("\n");
  if (settings.width_height) {
    form.elements.width.value = settings.width_height[0];
    form.elements.height.value = settings.width_height[1];
  }
  form.elements.seed.value = settings.seed ?? "";
  for (const [name] of [...MAIN_NUMBERS, ...ADVANCED]) {
    const input = form.elements[name];
    if (!(name in settings) || !input) continue;
    if (input.type === "checkbox") input.checked = Boolean(settings[name]);
    else input.value = settings[name] ?? "";
  }
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
  const input = name === "width_height" ? [form.elements.width, form.elements.height] : [form.elements[name]];
  for (const field of input) if (field && field.classList) field.classList.add("invalid");
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

function submit(event) {
  event.preventDefault();
  clearErrors();
  const { settings, seed: given } = readForm();
  const n = Number.isInteger(settings.n_batches) && settings.n_batches > 0 ? settings.n_batches : 1;
  const seed = given ?? Math.floor(Math.random() * (2 ** 32 - n));
  const run = [];
  for (let i = 0; i < n; i++) {
    const job = {
      id: newId(), run, index: i, seed: typeof seed === "number" ? seed + i : seed, status: "waiting",
      settings: { ...settings, seed: typeof seed === "number" ? seed + i : seed }, sent: false,
    };
    job.tags = { ...job.settings, batch_index: i, run_seed: seed };
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
  await post({ execEndpoint: "/cancel", targetExecutor: "renderer", data: [{ id: job.id }] }).catch(() => {});
}

async function poll() {
  const watched = jobs.filter((j) => j.sent && !j.finished);
  if (watched.length) {
    try {
      const states = await post({
        execEndpoint: "/progress", targetExecutor: "renderer", data: watched.map((j) => ({ id: j.id })),
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
          execEndpoint: "/progress", targetExecutor: "renderer", data: fresh.map((j) => ({ id: j.id })),
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
  const image = el("img", { alt: "latest frame", class: "preview" });
  const preview = (job.doc && job.doc.uri) || job.preview;
  if (preview) image.src = preview;
  const text = job.settings.text_prompts ? job.settings.text_prompts.join(" | ") : "";
  const info = el("div", {}, [
    el("div", { class: `status ${job.status}`, text: job.status + (job.cancelling && !job.finished ? " (cancelling)" : "") }),
    el("div", { text: `seed ${job.seed} · ${text.slice(0, 80)}` }),
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
  const lines = [
    `seed ${seed} · ${status}`,
    `${(settings.width_height || []).join("x")}, ${settings.steps ?? 250} steps, guidance ${settings.clip_guidance_scale ?? 5000}`,
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

buildAdvanced();
form.addEventListener("submit", submit);
poll();
loadSavedImages();
