// The rargen serve web page: loads the model and its class names, filters them as you
// type, POSTs /v1/images with "stream": true and reads the Server-Sent Events from the
// fetch body (EventSource cannot POST): a progress bar from the progress events, each
// image as its event arrives, with a download button. Cancel aborts the fetch, which
// the server sees as a disconnect and frees the rows. No dependencies.
const $ = (id) => document.getElementById(id);
const state = { classes: [], chosen: undefined, controller: undefined, model: undefined };

function showError(message) {
  const el = $('error');
  el.textContent = message;
  el.hidden = !message;
}

function renderClassList() {
  const q = $('search').value.trim().toLowerCase();
  const list = $('class-list');
  const matches = state.classes.filter((c) => q === '' || String(c.id) === q || c.name.toLowerCase().includes(q) || c.synonyms.some((s) => s.toLowerCase().includes(q)));
  list.replaceChildren(
    ...matches.slice(0, 500).map((c) => {
      const o = document.createElement('option');
      o.value = String(c.id);
      o.textContent = `${c.id} ${c.synonyms.length ? c.synonyms.join(', ') : c.name}`;
      if (state.chosen === c.id) o.selected = true;
      return o;
    }),
  );
  if (matches.length === 1 && state.chosen !== matches[0].id) choose(matches[0].id);
  if (state.chosen !== undefined) list.value = String(state.chosen);
}

function choose(id) {
  state.chosen = id;
  const c = state.classes[id];
  $('chosen').textContent = c ? `Chosen: ${c.id} ${c.name}` : 'No class chosen';
}

async function init() {
  try {
    const [models, classes] = await Promise.all([fetch('/v1/models').then((r) => r.json()), fetch('/v1/classes').then((r) => r.json())]);
    const m = models.data[0];
    state.model = m;
    state.classes = classes.classes;
    $('model').textContent = `${m.id}: ${m.numClasses} classes, ${m.tokensPerImage} tokens per image, ${m.resolution}x${m.resolution} px`;
    $('guidance').value = String(m.sampling.guidanceScale);
    $('temperature').value = String(m.sampling.temperature);
    $('count').max = String(m.maxImagesPerRequest);
    renderClassList();
    choose(state.classes[0]?.id);
    $('class-list').value = String(state.chosen);
  } catch (e) {
    showError(`Could not load the model: ${e.message}`);
  }
}

function figureFor(k, classId, index) {
  const fig = document.createElement('figure');
  fig.className = 'pending';
  fig.dataset.k = String(k);
  const img = document.createElement('img');
  img.alt = `class ${classId}, image ${index}`;
  img.width = state.model?.resolution ?? 128;
  img.height = state.model?.resolution ?? 128;
  const cap = document.createElement('figcaption');
  const label = document.createElement('span');
  label.textContent = `${state.classes[classId]?.name ?? classId} · #${index}`;
  cap.append(label);
  fig.append(img, cap);
  return fig;
}

function showImage(ev) {
  const fig = $('images').querySelector(`figure[data-k="${ev.k}"]`);
  if (!fig) return;
  const url = `data:image/png;base64,${ev.png}`;
  fig.querySelector('img').src = url;
  fig.className = 'done';
  const a = document.createElement('a');
  a.className = 'download';
  a.href = url;
  a.download = `rargen-${ev.class}-seed${$('seed').value.trim() || 0}-${ev.index}.png`;
  a.textContent = 'Download';
  fig.querySelector('figcaption').append(a);
}

/** Splits an SSE byte stream into {event, data} records. */
async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { event, data: JSON.parse(data.join('\n')) };
    }
  }
}

async function generate(e) {
  e.preventDefault();
  showError('');
  if (state.chosen === undefined) return showError('Choose a class first');
  const seedText = $('seed').value.trim() || '0';
  const body = {
    classes: [state.chosen],
    n: Number($('count').value),
    seed: /^\d{1,15}$/.test(seedText) ? Number(seedText) : seedText,
    guidanceScale: Number($('guidance').value),
    temperature: Number($('temperature').value),
    stream: true,
  };
  const controller = new AbortController();
  state.controller = controller;
  $('generate').disabled = true;
  $('cancel').disabled = false;
  $('progress').value = 0;
  $('status').textContent = 'Queued…';
  const t0 = performance.now();
  try {
    const res = await fetch('/v1/images', { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify(body), signal: controller.signal });
    if (!res.ok) {
      const j = await res.json().catch(() => ({}));
      throw new Error(j.error ? `${j.error.message}${j.error.field ? ` (${j.error.field})` : ''}` : `HTTP ${res.status}`);
    }
    let done = 0;
    for await (const ev of events(res.body)) {
      if (ev.event === 'start') {
        $('images').replaceChildren(...ev.data.classes.map((c, k) => figureFor(k, c, k)));
        $('status').textContent = `Generating ${ev.data.images} image${ev.data.images > 1 ? 's' : ''}…`;
      } else if (ev.event === 'progress') {
        $('progress').value = ev.data.fraction;
      } else if (ev.event === 'image') {
        done++;
        showImage(ev.data);
        $('status').textContent = `${done} of ${body.n} done`;
      } else if (ev.event === 'done') {
        $('progress').value = 1;
        $('status').textContent = `${ev.data.images} image${ev.data.images > 1 ? 's' : ''} in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
      } else if (ev.event === 'error') throw new Error(ev.data.error.message);
    }
  } catch (err) {
    if (err.name === 'AbortError') $('status').textContent = 'Cancelled';
    else showError(err.message);
  } finally {
    state.controller = undefined;
    $('generate').disabled = false;
    $('cancel').disabled = true;
  }
}

$('search').addEventListener('input', renderClassList);
$('class-list').addEventListener('change', (e) => choose(Number(e.target.value)));
$('form').addEventListener('submit', generate);
$('cancel').addEventListener('click', () => state.controller?.abort());
init();
