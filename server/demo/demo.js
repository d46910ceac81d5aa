// The demo page: pick a model, send an image to the upload route with each snapshot's
// answer requested, show the ensemble's answer, the votes and the training report.
// The API key, when the server wants one, is kept in sessionStorage and sent as a header.
"use strict";

const KEY_STORAGE = "snapens-api-key";
const TOP_K = 5;
// Below this predictive entropy (nats) splitting the uncertainty into parts says little.
const NEARLY_CERTAIN = 0.05;
const $ = (id) => document.getElementById(id);
const state = { model: null, file: null, sequence: 0, blobUrls: [] };

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  const headers = key ? { "X-API-Key": key } : {};
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    askForKey(key !== null);
    throw new ApiError(401, key ? "The API key was refused." : "This server needs an API key.");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error || message;
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

function say(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

// An error about the image replaces the answer: the one shown was for another image or setting.
function fail(message) {
  $("results").hidden = true;
  say(message, true);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const percent = (p) => `${(100 * p).toFixed(p >= 0.9995 || p < 0.0005 ? 0 : 1)}%`;
const nats = (x) => x.toFixed(3);

// The API key ----------------------------------------------------------------------------

function askForKey(refused) {
  const form = $("key-form");
  form.hidden = false;
  form.querySelector("label").textContent = refused
    ? "The API key was refused: enter the right one"
    : "This server needs an API key";
  $("api-key").focus();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
  $("key-form").hidden = true;
  loadModels();
});

// Models ---------------------------------------------------------------------------------

async function loadModels() {
  say("Loading the models…");
  try {
    const { models } = await (await api("/v1/models")).json();
    const select = $("model");
    select.replaceChildren(...models.map((name) => new Option(name, name)));
    select.disabled = models.length === 0;
    if (models.length === 0) {
      say("The repository has no models yet: train one with python -m trainer.", true);
      return;
    }
    say("");
    await selectModel(models.includes(state.model) ? state.model : models[0]);
  } catch (error) {
    say(error.message, true);
  }
}

async function selectModel(name) {
  state.model = name;
  $("model").value = name;
  const metadata = await (await api(`/v2/models/${encodeURIComponent(name)}`)).json();
  const parameters = metadata.parameters;
  const info = $("model-info");
  const slider = $("m");
  if (parameters.ready) {
    // Every snapshot is loaded; an answer averages the last m (the served default first).
    const cycles = parameters.loaded_snapshots || parameters.snapshots.map((s) => s.cycle);
    const [, , height, width] = metadata.inputs[0].shape;
    const colour = parameters.color_mode === "L" ? "greyscale" : "colour";
    const served =
      parameters.m < cycles.length ? `, the last ${parameters.m} answer by default` : "";
    info.textContent =
      `${cycles.length} snapshots loaded (cycles ${cycles[0]}–${cycles.at(-1)})${served}, ` +
      `${parameters.classes.length} classes; images are resized to ${width}×${height} ${colour}.`;
    slider.max = cycles.length;
    slider.value = parameters.m;
    slider.disabled = cycles.length < 2;
  } else {
    const error = parameters.last_load && parameters.last_load.error;
    info.textContent = `Not ready${error ? `: ${error}` : " yet"}.`;
    slider.disabled = true;
  }
  $("m-value").textContent = slider.value;
  loadReport(name);
  if (state.file && parameters.ready) predict();
}

$("model").addEventListener("change", (event) => {
  selectModel(event.target.value).catch((error) => say(error.message, true));
});

$("m").addEventListener("input", () => {
  $("m-value").textContent = $("m").value;
});
$("m").addEventListener("change", () => {
  if (state.file) predict();
});

// The image ------------------------------------------------------------------------------

function useFile(file) {
  if (!file) return;
  if (!/^image\/(png|jpeg)$/.test(file.type)) {
    fail(`${file.name} is not a PNG or JPEG image.`);
    return;
  }
  state.file = file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = `The image sent: ${file.name}`;
  preview.hidden = false;
  predict();
}

$("file").addEventListener("change", (event) => useFile(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  useFile(event.dataTransfer.files[0]);
});

// The prediction -------------------------------------------------------------------------

async function predict() {
  if (!state.model || !state.file) return;
  const sequence = ++state.sequence;
  const query = new URLSearchParams({ members: "true", top_k: TOP_K, m: $("m").value });
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  say("Asking the snapshots…");
  try {
    const url = `/v1/models/${encodeURIComponent(state.model)}/images:predict?${query}`;
    const body = await (await api(url, { method: "POST", body: form })).json();
    if (sequence !== state.sequence) return; // a newer request is on its way
    render(body.predictions[0]);
    say(`Answered by snapshots ${body.snapshots.join(", ")} of ${body.model_name}.`);
  } catch (error) {
    if (sequence === state.sequence) fail(error.message);
  }
}

function bar(fraction, className) {
  const track = element("span", `track ${className}`);
  const fill = element("span", "fill");
  fill.style.setProperty("--size", `${(100 * fraction).toFixed(2)}%`);
  track.append(fill);
  return track;
}

function render(prediction) {
  $("results").hidden = false;
  $("answer-class").textContent = prediction.class;
  $("answer-confidence").textContent = `${percent(prediction.confidence)} probability`;

  $("top").replaceChildren(
    ...prediction.top_k.map((score) => {
      const item = element("li");
      item.dataset.class = score.class;
      item.append(
        element("span", "name", score.class),
        bar(score.probability, "horizontal"),
        element("span", "value", percent(score.probability)),
      );
      return item;
    }),
  );

  $("votes").replaceChildren(
    ...prediction.members.map((member) => {
      const probability = member.probabilities[member.label];
      const agrees = member.label === prediction.label;
      const item = element("li", agrees ? "agrees" : "differs");
      item.dataset.class = member.class;
      item.title = `Snapshot ${member.cycle} votes ${member.class} (${percent(probability)})`;
      item.append(
        element("span", "value", percent(probability)),
        bar(probability, "vertical"),
        element("span", "name", member.class),
        element("span", "snapshot", `snapshot ${member.cycle}`),
      );
      return item;
    }),
  );
  explain(prediction);
}

function explain(prediction) {
  const members = prediction.members;
  const m = members.length;
  const classes = prediction.probabilities.length;
  const differ = members.filter((member) => member.label !== prediction.label);
  const answer = prediction.class;
  let verdict;
  if (m === 1) {
    verdict = "Only one snapshot answered, so there is nothing to compare: average more of them.";
  } else if (differ.length === 0) {
    verdict = `All ${m} snapshots agree: each one voted for ${answer}.`;
  } else {
    const who = differ.map((member) => `snapshot ${member.cycle} said ${member.class}`);
    verdict =
      `${differ.length} of ${m} snapshots voted differently from the ensemble's answer ` +
      `${answer} (${who.join(", ")}).`;
  }
  const total = prediction.predictive_entropy;
  if (total < NEARLY_CERTAIN) {
    verdict += " Together they are close to certain.";
  } else {
    const share = prediction.mutual_information / total;
    verdict +=
      ` Of the ensemble's uncertainty, ${percent(share)} comes from the snapshots ` +
      `disagreeing and ${percent(1 - share)} from the image itself being ambiguous.`;
  }
  const pairs = (m * (m - 1)) / 2;
  const pairsApart = Math.round(prediction.pairwise_disagreement * pairs);
  const figures = [
    [
      "Snapshots voting differently",
      `${differ.length} of ${m}`,
      `vote disagreement ${prediction.vote_disagreement.toFixed(2)}`,
    ],
    [
      "Pairs of snapshots that disagree",
      `${pairsApart} of ${pairs}`,
      `pairwise disagreement ${prediction.pairwise_disagreement.toFixed(2)}`,
    ],
    [
      "Total uncertainty",
      `${nats(total)} nats`,
      `predictive entropy: 0 is certain, ${nats(Math.log(classes))} is a blind guess among ` +
        `${classes} classes`,
    ],
    [
      "How ambiguous the image is",
      `${nats(prediction.expected_entropy)} nats`,
      "expected entropy: the uncertainty each snapshot has on its own, averaged",
    ],
    [
      "Disagreement beyond ambiguity",
      `${nats(prediction.mutual_information)} nats`,
      "mutual information: how much the snapshots disagree beyond the image being ambiguous; " +
        "high for images unlike the training data",
    ],
    [
      `Spread of the confidence in ${answer}`,
      `± ${percent(prediction.member_std)}`,
      `standard deviation over the snapshots of the probability they give ${answer}`,
    ],
  ];
  $("verdict").textContent = verdict;
  $("figures").replaceChildren(
    ...figures.flatMap(([term, value, meaning]) => {
      const definition = element("dd");
      definition.append(element("strong", "", value), element("span", "muted", ` ${meaning}`));
      return [element("dt", "", term), definition];
    }),
  );
}

// The training report --------------------------------------------------------------------

async function loadReport(name) {
  state.blobUrls.forEach((url) => URL.revokeObjectURL(url));
  state.blobUrls = [];
  const base = `/v1/models/${encodeURIComponent(name)}/report`;
  const figures = [...document.querySelectorAll("#report figure")];
  const plots = figures.map(async (figure) => {
    const img = figure.querySelector("img");
    try {
      const blob = await (await api(`${base}/${figure.dataset.file}`)).blob();
      const url = URL.createObjectURL(blob);
      state.blobUrls.push(url);
      img.src = url;
      figure.hidden = false;
      return true;
    } catch {
      img.removeAttribute("src");
      figure.hidden = true; // this model's trainer did not write that plot
      return false;
    }
  });
  const summary = $("report-summary");
  summary.textContent = "";
  try {
    const report = await (await api(`${base}/report.json`)).json();
    summary.textContent = describeReport(report);
  } catch {
    summary.textContent = "";
  }
  const shown = (await Promise.all(plots)).some(Boolean);
  $("report").hidden = !shown && !summary.textContent;
}

function describeReport(report) {
  const schedule = report.schedule ? `, ${report.schedule.name} schedule` : "";
  let text = `Network ${report.architecture}${schedule}, ${report.snapshots.length} snapshots.`;
  if (report.ensemble && report.best_single) {
    text +=
      ` On ${report.validation_examples} validation images the ensemble of the last ` +
      `${report.ensemble.m} errs on ${percent(report.ensemble.error)}; the best single ` +
      `snapshot (cycle ${report.best_single.cycle}) on ${percent(report.best_single.error)}.`;
  }
  return text;
}

loadModels();
