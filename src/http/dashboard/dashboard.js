// runyard dashboard: plain JavaScript, no dependencies, no build step.
//
// Everything shown comes from /api/v1 with the token kept in sessionStorage
// (`Authorization: Bearer` on fetch; `?access_token=` on the two stream routes, since
// an EventSource cannot send headers). Live updates come from EventSource streams
// whose event ids are journal sequence numbers: the page loads what exists, then
// opens the stream with `after=` the last sequence number it holds, and the browser
// resumes with `Last-Event-ID` when the connection drops, so no event is lost or
// shown twice across a reload or a server restart.
'use strict';

(() => {
  const CONFIG = JSON.parse(document.getElementById('runyard-config').textContent);
  /** Every lifecycle event name the streams send (named events need a listener each). */
  const EVENT_NAMES = CONFIG.event_names;
  const TERMINAL_EVENTS = new Set(['RunCompleted', 'RunFailed', 'RunCancelled']);
  const ENDED = new Set(['completed', 'failed', 'cancelled']);
  const TOKEN_KEY = 'runyard.token';
  /** Progress on the overview at most this often (the server coalesces). */
  const OVERVIEW_EVERY = '250ms';
  /** Most loss points kept in memory per chart; older ones are thinned. */
  const MAX_POINTS = 4000;

  const $ = (id) => document.getElementById(id);

  /** `el('td', {class: 'num'}, 'text', child)`: an element; strings become text nodes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const fmt = {
    num(v, digits = 4) {
      return typeof v === 'number' && Number.isFinite(v) ? v.toPrecision(digits) : '–';
    },
    pct(v) {
      return typeof v === 'number' && Number.isFinite(v) ? (v * 100).toFixed(1) + ' %' : '–';
    },
    time(iso) {
      if (!iso) return '–';
      const d = new Date(iso);
      return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
    },
    date(iso) {
      return iso ? new Date(iso).toLocaleString([], { hour12: false }) : '–';
    },
    secs(v) {
      if (typeof v !== 'number' || !Number.isFinite(v)) return '–';
      if (v < 90) return v.toFixed(1) + ' s';
      if (v < 5400) return (v / 60).toFixed(1) + ' min';
      return (v / 3600).toFixed(1) + ' h';
    },
  };

  // ---------------------------------------------------------------- token and API

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (_) {
      return '';
    }
  }

  function setToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      notice('this browser keeps no session storage: the token cannot be kept', true);
    }
    showTokenState();
  }

  function showTokenState() {
    $('token-state').textContent = token() ? 'token set for this tab' : 'no token';
    $('token-input').value = '';
  }

  function notice(text, isError) {
    const box = $('notice');
    box.textContent = text || '';
    box.classList.toggle('error', !!isError);
    box.hidden = !text;
  }

  /** An error answer: `problem` is the server's problem+json, when it sent one. */
  class ApiError extends Error {
    constructor(status, problem) {
      const detail = problem && (problem.detail || problem.title);
      super(detail ? (problem.code ? problem.code + ': ' : '') + detail : 'HTTP ' + status);
      this.status = status;
      this.problem = problem;
    }
  }

  /** Calls the API with the token; answers `{status, body}` or throws an ApiError. */
  async function api(path, options = {}) {
    const headers = {};
    const bearer = token();
    if (bearer) headers.Authorization = 'Bearer ' + bearer;
    if (options.body !== undefined) headers['Content-Type'] = options.contentType || 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method: options.method || 'GET',
        headers,
        body: options.body,
        cache: 'no-store',
      });
    } catch (_) {
      throw new ApiError(0, { detail: 'the server cannot be reached' });
    }
    const text = await response.text();
    let body = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch (_) {
        body = null;
      }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, body);
      if (response.status === 401) {
        notice(
          'This server needs a token: paste one (from `runyard token create`) in the Token box above. ' +
            error.message,
          true,
        );
        $('token-input').focus();
      } else if (response.status === 403) {
        notice(error.message, true);
      }
      throw error;
    }
    return { status: response.status, body };
  }

  /** Every journaled event of a run after `after`, following pages. */
  async function runEvents(id, after) {
    const all = [];
    for (;;) {
      const { body } = await api(`/api/v1/runs/${id}/events?after=${after}&limit=10000`);
      all.push(...body);
      if (body.length < 10000) return all;
      after = body[body.length - 1].seq;
    }
  }

  function setLive(state, text) {
    const badge = $('live');
    badge.dataset.state = state;
    badge.textContent = text || state;
  }

  // ---------------------------------------------------------------- live streams

  /**
   * One EventSource with resume: lifecycle events (deduplicated by sequence number)
   * go to `on.event`, progress samples to `on.progress`. A connection the browser
   * gives up on (an error status, e.g. while a restarted server replays) is opened
   * again after a back-off from the last sequence number seen; `on.reopened` runs
   * then, so the view can reload what it shows.
   */
  class LiveStream {
    constructor(path, params, after, on) {
      this.path = path;
      this.params = params;
      this.lastSeq = after;
      this.on = on;
      this.source = null;
      this.retryTimer = null;
      this.backoff = 500;
      this.closed = false;
    }

    open() {
      if (this.closed) return;
      const query = new URLSearchParams(this.params);
      query.set('after', String(this.lastSeq));
      const bearer = token();
      if (bearer) query.set('access_token', bearer);
      const source = new EventSource(`${this.path}?${query}`);
      this.source = source;
      const lifecycle = (message) => {
        const event = JSON.parse(message.data);
        if (event.seq <= this.lastSeq) return;
        this.lastSeq = event.seq;
        this.on.event(event);
      };
      for (const name of EVENT_NAMES) source.addEventListener(name, lifecycle);
      source.addEventListener('progress', (message) => this.on.progress(JSON.parse(message.data)));
      // The server dropped a client that was too slow: go on from where it says.
      source.addEventListener('resume', (message) => {
        const { after } = JSON.parse(message.data);
        this.lastSeq = Math.max(this.lastSeq, after);
        this.restart(0);
      });
      source.onopen = () => {
        this.backoff = 500;
        setLive('live');
      };
      source.onerror = () => {
        if (this.on.finished && this.on.finished()) {
          this.close();
          setLive('ended', 'run ended');
          return;
        }
        if (source.readyState === EventSource.CLOSED) {
          // The browser does not retry after an error status: do it here.
          setLive('reconnecting');
          this.restart(this.backoff);
          this.backoff = Math.min(this.backoff * 2, 10000);
        } else {
          setLive('reconnecting');
        }
      };
    }

    restart(delay) {
      if (this.source) this.source.close();
      this.source = null;
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        if (this.closed) return;
        this.open();
        if (this.on.reopened) this.on.reopened();
      }, delay);
    }

    close() {
      this.closed = true;
      clearTimeout(this.retryTimer);
      if (this.source) this.source.close();
      this.source = null;
    }
  }

  // ---------------------------------------------------------------- shared pieces

  function stateBadge(state) {
    return el('span', { class: 'state', 'data-state': state }, state);
  }

  /** The epochs a run will train: its spec's, else (a command run) what it reported. */
  function epochsOf(run) {
    if (run.spec && run.spec.epochs) return run.spec.epochs;
    return run.progress && run.progress.epochs ? run.progress.epochs : null;
  }

  /** The share of a run done, 0 to 100: the live sample, else epochs journaled. */
  function percentOf(run) {
    if (run.state === 'completed') return 100;
    if (run.progress && typeof run.progress.percent === 'number') return run.progress.percent;
    const epochs = epochsOf(run);
    const done = run.metrics ? run.metrics.epochs_completed : 0;
    return epochs ? Math.min(100, (100 * done) / epochs) : 0;
  }

  function setProgress(bar, percent, state, label) {
    const value = Math.max(0, Math.min(100, percent || 0));
    bar.setAttribute('aria-valuenow', value.toFixed(2));
    bar.dataset.state = state;
    bar.querySelector('.bar').style.width = value.toFixed(2) + '%';
    bar.querySelector('.label').textContent = label || value.toFixed(1) + ' %';
  }

  function progressBar() {
    return el(
      'div',
      { class: 'progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': '0' },
      el('div', { class: 'bar' }),
      el('span', { class: 'label' }),
    );
  }

  function accuracyOf(metrics) {
    if (!metrics) return null;
    return metrics.val_metric ?? metrics.train_accuracy;
  }

  // ---------------------------------------------------------------- overview

  const overview = {
    generation: 0,
    stopped: false,
    stream: null,
    runs: new Map(),
    rows: new Map(),
    refreshTimer: null,
    refreshing: null,
    again: false,

    async start() {
      // A newer start (the token changed meanwhile) makes this one stop where it is.
      const generation = ++this.generation;
      const stale = () => this.stopped || generation !== this.generation;
      $('overview').hidden = false;
      setLive('connecting');
      let after = 0;
      try {
        const response = await fetch('/readyz', { cache: 'no-store' });
        if (response.ok) after = (await response.json()).last_seq || 0;
      } catch (_) {
        // Not reachable now: the stream's retries find it when it is back.
      }
      if (stale()) return;
      await this.refresh();
      if (stale()) return;
      this.stream = new LiveStream('/api/v1/stream', { every: OVERVIEW_EVERY }, after, {
        event: () => this.scheduleRefresh(),
        progress: (sample) => this.progress(sample),
        reopened: () => this.scheduleRefresh(),
      });
      this.stream.open();
    },

    stop() {
      this.stopped = true;
      if (this.stream) this.stream.close();
      this.stream = null;
      clearTimeout(this.refreshTimer);
      this.refreshTimer = null;
      $('overview').hidden = true;
    },

    /** Reloads the tables soon: events come in bursts, one reload serves a burst. */
    scheduleRefresh() {
      if (this.refreshTimer) return;
      this.refreshTimer = setTimeout(() => {
        this.refreshTimer = null;
        this.refresh();
      }, 150);
    },

    async refresh() {
      if (this.refreshing) {
        this.again = true;
        return this.refreshing;
      }
      this.refreshing = (async () => {
        try {
          const [runs, queued, slots] = await Promise.all([
            api('/api/v1/runs?limit=200'),
            api('/api/v1/runs?state=queued&sort=created_at'),
            api('/api/v1/slots'),
          ]);
          if (this.stopped) return;
          notice('');
          this.renderRuns(runs.body);
          this.renderQueue(queued.body);
          this.renderSlots(slots.body);
        } catch (error) {
          if (error.status !== 401 && error.status !== 403) notice('cannot load the runs: ' + error.message, true);
        }
      })();
      await this.refreshing;
      this.refreshing = null;
      if (this.again) {
        this.again = false;
        await this.refresh();
      }
    },

    renderRuns(runs) {
      const body = $('runs-body');
      const seen = new Set();
      for (const run of runs) {
        seen.add(run.id);
        this.runs.set(run.id, run);
        let row = this.rows.get(run.id);
        if (!row) {
          row = this.newRow(run);
          this.rows.set(run.id, row);
        }
        this.fillRow(row, run);
        body.append(row.tr); // appending an existing row moves it: the list's order
      }
      for (const [id, row] of this.rows) {
        if (!seen.has(id)) {
          row.tr.remove();
          this.rows.delete(id);
          this.runs.delete(id);
        }
      }
      $('runs-empty').hidden = runs.length > 0;
    },

    newRow(run) {
      const cells = {
        name: el('td', {}, el('a', { href: `#/runs/${run.id}`, class: 'run-link' }, run.name)),
        state: el('td', { class: 'state-cell' }),
        progress: progressBar(),
        epoch: el('td', { class: 'num epoch' }),
        loss: el('td', { class: 'num loss' }),
        accuracy: el('td', { class: 'num accuracy' }),
        slot: el('td', { class: 'slot' }),
        updated: el('td', { class: 'num updated' }),
      };
      const tr = el(
        'tr',
        { 'data-run-id': run.id },
        cells.name,
        cells.state,
        el('td', {}, cells.progress),
        cells.epoch,
        cells.loss,
        cells.accuracy,
        cells.slot,
        cells.updated,
      );
      return { tr, cells };
    },

    fillRow(row, run) {
      const { cells } = row;
      row.tr.dataset.state = run.state;
      cells.state.replaceChildren(stateBadge(run.state));
      setProgress(cells.progress, percentOf(run), run.state);
      const epochs = epochsOf(run);
      const epoch = run.progress ? run.progress.epoch : run.metrics.epochs_completed;
      cells.epoch.textContent = `${epoch} / ${epochs ?? '?'}`;
      cells.loss.textContent = fmt.num(run.progress && run.progress.loss != null ? run.progress.loss : run.metrics.train_loss);
      cells.accuracy.textContent = run.task === 'regression' ? fmt.num(run.metrics.val_metric) : fmt.pct(accuracyOf(run.metrics));
      cells.slot.textContent = run.slurm
        ? `slurm ${run.slurm.job_id}${run.slurm_live && run.slurm_live.state ? ` ${run.slurm_live.state}` : ''}${run.slurm_live && run.slurm_live.unreachable ? ' (unreachable)' : ''}`
        : run.slots && run.slots.length ? `${run.slots.join(', ')} (${run.device || '?'})` : '–';
      cells.updated.textContent = fmt.time(run.updated_at);
    },

    /** A live sample: moves the run's bar without a reload. */
    progress(sample) {
      const row = this.rows.get(sample.run_id);
      const run = this.runs.get(sample.run_id);
      if (!row || !run || ENDED.has(run.state)) return;
      setProgress(row.cells.progress, sample.percent, run.state);
      row.cells.epoch.textContent = `${sample.epoch} / ${sample.epochs}`;
      if (sample.loss != null) row.cells.loss.textContent = fmt.num(sample.loss);
    },

    renderQueue(queued) {
      const list = $('queue');
      queued.sort((a, b) => (a.queue_position ?? 1e9) - (b.queue_position ?? 1e9));
      list.replaceChildren(
        ...queued.map((run) =>
          el(
            'li',
            { 'data-run-id': run.id },
            el('a', { href: `#/runs/${run.id}` }, run.name),
            ` · priority ${run.priority}`,
            run.spec && run.spec.slots > 1 ? ` · ${run.spec.slots} slots` : '',
            run.not_before ? ` · retry after ${fmt.time(run.not_before)}` : '',
            run.attempt ? ` · attempt ${run.attempt + 1}` : '',
          ),
        ),
      );
      $('queue-empty').hidden = queued.length > 0;
    },

    renderSlots(slots) {
      $('slots-body').replaceChildren(
        ...slots.map((slot) => {
          const run = slot.run_id ? this.runs.get(slot.run_id) : null;
          return el(
            'tr',
            { 'data-slot': slot.id },
            el('td', {}, slot.id),
            el('td', {}, slot.device),
            el('td', {}, slot.run_id ? el('a', { href: `#/runs/${slot.run_id}` }, run ? run.name : slot.run_id.slice(0, 8)) : 'free'),
            el('td', {}, run ? stateBadge(run.state) : ''),
          );
        }),
      );
    },
  };

  // ---------------------------------------------------------------- submit form

  /** The media type of a spec typed in the box: JSON, TOML or (else) YAML. */
  function detectFormat(text) {
    const trimmed = text.trimStart();
    if (trimmed.startsWith('{')) return 'application/json';
    const first = text
      .split('\n')
      .map((line) => line.trim())
      .find((line) => line && !line.startsWith('#'));
    if (first && (/^\[[^\]]+\]$/.test(first) || /^[A-Za-z0-9_."-]+\s*=/.test(first))) return 'application/toml';
    return 'application/yaml';
  }

  async function submitSpec(event) {
    event.preventDefault();
    const result = $('submit-result');
    const text = $('spec').value;
    if (!text.trim()) {
      result.className = 'result error';
      result.textContent = 'paste a run spec first (or pick the digits example)';
      return;
    }
    let type = $('spec-format').value;
    if (type === 'auto') type = detectFormat(text);
    const query = $('spec-rerun').checked ? '?on_duplicate=rerun' : '';
    const button = $('spec-submit');
    button.disabled = true;
    try {
      const { status, body } = await api('/api/v1/runs' + query, { method: 'POST', body: text, contentType: type });
      result.className = 'result';
      result.replaceChildren(
        status === 201 ? 'Submitted: ' : 'This spec was submitted before: ',
        el('a', { href: `#/runs/${body.id}`, 'data-run-id': body.id }, `${body.name} (${body.id})`),
        ` · ${body.state}`,
      );
      overview.scheduleRefresh();
    } catch (error) {
      result.className = 'result error';
      result.textContent = 'not submitted: ' + error.message;
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- run page

  const runPage = {
    generation: 0,
    stopped: false,
    id: null,
    run: null,
    stream: null,
    ended: false,
    events: [],
    loss: [],
    epochs: new Map(),
    refreshTimer: null,
    drawPending: false,
    logSource: null,
    logKey: '',

    async start(id) {
      const generation = ++this.generation;
      const stale = () => this.stopped || generation !== this.generation;
      Object.assign(this, { id, run: null, ended: false, events: [], loss: [], epochs: new Map(), stopped: false });
      ['run-pause', 'run-resume', 'run-cancel'].forEach((b) => ($(b).disabled = true));
      $('run-state').replaceChildren();
      $('run-facts').replaceChildren();
      $('run-error').hidden = true;
      setProgress($('run-progress'), 0, '', ' ');
      $('run-view').hidden = false;
      $('timeline').replaceChildren();
      $('run-name').textContent = '…';
      $('run-id').textContent = id;
      setLive('connecting');
      let events;
      try {
        // The run first, then its events: the events hold at least what the run shows.
        this.run = (await api(`/api/v1/runs/${id}`)).body;
        events = await runEvents(id, 0);
      } catch (error) {
        $('run-name').textContent = error.status === 404 ? 'no such run' : 'cannot load the run';
        if (error.status !== 401) notice(error.message, true);
        return;
      }
      if (stale()) return;
      for (const event of events) this.addEvent(event);
      this.renderRun();
      await this.loadLossHistory();
      if (stale()) return;
      const after = events.length ? events[events.length - 1].seq : 0;
      if (this.ended) {
        setLive('ended', 'run ended');
        return;
      }
      this.stream = new LiveStream(`/api/v1/runs/${id}/stream`, {}, after, {
        event: (event) => {
          this.addEvent(event);
          this.scheduleRefresh();
        },
        progress: (sample) => this.progress(sample),
        reopened: () => this.scheduleRefresh(),
        finished: () => this.ended,
      });
      this.stream.open();
    },

    stop() {
      this.stopped = true;
      if (this.stream) this.stream.close();
      this.stream = null;
      this.closeLogs();
      $('logs-panel').hidden = true;
      clearTimeout(this.refreshTimer);
      this.refreshTimer = null;
      $('run-view').hidden = true;
    },

    async loadLossHistory() {
      try {
        const { body } = await api(`/api/v1/runs/${this.id}/metrics?name=loss&points=2048`);
        const history = body.points.map((p) => [p.step, p.value]);
        // Live samples that came in meanwhile are newer: keep those past the history.
        const last = history.length ? history[history.length - 1][0] : -1;
        this.loss = history.concat(this.loss.filter(([step]) => step > last));
      } catch (_) {
        // The chart fills from the stream.
      }
      this.draw();
    },

    scheduleRefresh() {
      if (this.refreshTimer) return;
      this.refreshTimer = setTimeout(async () => {
        this.refreshTimer = null;
        try {
          const { body } = await api(`/api/v1/runs/${this.id}`);
          if (this.stopped || body.id !== this.id) return;
          this.run = body;
          if (ENDED.has(body.state)) this.ended = true;
          this.renderRun();
        } catch (_) {
          // Shown by api(); the next event tries again.
        }
      }, 150);
    },

    addEvent(event) {
      this.events.push(event);
      const data = event.data || {};
      if (event.type === 'EpochCompleted') {
        const entry = this.epochs.get(data.epoch) || {};
        entry.train = data.train_accuracy;
        this.epochs.set(data.epoch, entry);
      } else if (event.type === 'EpochEvaluated') {
        const entry = this.epochs.get(data.epoch) || {};
        entry.val = data.val_metric;
        this.epochs.set(data.epoch, entry);
      }
      if (TERMINAL_EVENTS.has(event.type)) this.ended = true;
      const list = $('timeline');
      const follow = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
      const kind = TERMINAL_EVENTS.has(event.type)
        ? event.type === 'RunCompleted'
          ? 'terminal'
          : 'trouble'
        : /Failed|Stalled|Retry/.test(event.type)
          ? 'trouble'
          : '';
      list.append(
        el(
          'li',
          { 'data-seq': event.seq, 'data-type': event.type },
          el('span', { class: 'seq' }, event.seq),
          el('span', { class: 'at' }, fmt.time(event.at)),
          el('span', { class: `type ${kind}` }, event.type),
          el('span', { class: 'data', title: JSON.stringify(data) }, summarize(event)),
        ),
      );
      if (follow) list.scrollTop = list.scrollHeight;
      this.draw();
    },

    /** A live sample: the progress bar, the live figures and a loss point. */
    progress(sample) {
      if (!this.run) return;
      const live = !ENDED.has(this.run.state);
      if (live) {
        this.run.progress = sample;
        setProgress($('run-progress'), sample.percent, this.run.state, progressLabel(sample));
        this.renderFacts();
      }
      if (sample.loss == null || !sample.batches_per_epoch) return;
      const step = (sample.epoch - 1) * sample.batches_per_epoch + sample.batch;
      // A resumed attempt that starts below the newest point replaces the later ones.
      while (this.loss.length && this.loss[this.loss.length - 1][0] >= step) this.loss.pop();
      this.loss.push([step, sample.loss]);
      if (this.loss.length > MAX_POINTS) this.loss = this.loss.filter((_, i) => i % 2 === 1 || i === this.loss.length - 1);
      this.draw();
    },

    renderRun() {
      const run = this.run;
      if (!run) return;
      document.title = `${run.name} · runyard`;
      $('run-name').textContent = run.name;
      $('run-state').replaceChildren(stateBadge(run.state));
      $('run-state').dataset.state = run.state;
      const label = run.progress ? progressLabel(run.progress) : undefined;
      setProgress($('run-progress'), percentOf(run), run.state, label);
      $('run-pause').disabled = !['queued', 'starting', 'running'].includes(run.state);
      $('run-resume').disabled = run.state !== 'paused';
      $('run-cancel').disabled = ENDED.has(run.state);
      $('run-error').hidden = !run.error;
      $('run-error').textContent = run.error || '';
      const regression = run.task === 'regression';
      $('chart-accuracy-title').firstChild.textContent = regression ? 'Validation MAE ' : 'Accuracy ';
      this.renderFacts();
      this.showLogs();
      this.draw();
    },

    /**
     * A command run's logs: the last lines of the stream and rank picked, then each
     * line as it is written until the run ends. A run on several slots has a log per
     * rank, or every rank's with each line tagged `[rank N]`.
     */
    showLogs() {
      const spec = (this.run && this.run.spec) || {};
      const command = spec.kind === 'command';
      $('logs-panel').hidden = !command;
      if (!command) return;
      // A local run's ranks are its slots; a Slurm run's, its nodes × ranks per node.
      const ranks =
        spec.executor === 'slurm'
          ? Math.max(1, Number(spec.nodes) || 1) * Math.max(1, Number(spec.ranks_per_node) || 1)
          : Math.max(1, Number(spec.slots) || 1);
      const picker = $('logs-rank');
      const wanted = ranks > 1 ? ranks + 1 : 1;
      if (picker.options.length !== wanted) {
        const options = [...Array(ranks).keys()].map((r) => el('option', { value: String(r) }, `rank ${r}`));
        if (ranks > 1) options.push(el('option', { value: 'all' }, 'every rank'));
        picker.replaceChildren(...options);
      }
      picker.disabled = ranks < 2;
      this.openLogs();
    },

    openLogs() {
      const stream = $('logs-stream').value;
      const rank = $('logs-rank').value || '0';
      const key = `${this.id}|${stream}|${rank}`;
      if (key === this.logKey) return;
      this.closeLogs();
      this.logKey = key;
      const pre = $('run-logs');
      pre.textContent = '';
      const query = new URLSearchParams({ stream, rank, tail: '200' });
      const bearer = token();
      if (bearer) query.set('access_token', bearer);
      const source = new EventSource(`/api/v1/runs/${this.id}/logs/stream?${query}`);
      this.logSource = source;
      let lines = 0;
      source.addEventListener('line', (message) => {
        const follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(message.data + '\n');
        lines += 1;
        // Keep the newest 2,000 lines.
        if (lines > 2000) {
          pre.firstChild.remove();
          lines -= 1;
        }
        if (follow) pre.scrollTop = pre.scrollHeight;
      });
      source.onerror = () => {
        // The server ends the stream once the run has ended and its log is read.
        if (this.ended || source.readyState === EventSource.CLOSED) {
          source.close();
          if (this.logSource === source) this.logSource = null;
        }
      };
    },

    closeLogs() {
      if (this.logSource) this.logSource.close();
      this.logSource = null;
      this.logKey = '';
    },

    renderFacts() {
      /** A command run's progress-pipe figures: lines read, bad lines by kind. */
      const protocolLine = (p) => {
        const bad = Object.entries(p.bad || {});
        const total = bad.reduce((sum, [, n]) => sum + n, 0);
        const kinds = bad.map(([kind, n]) => `${kind} ${n}`).join(', ');
        return `${p.lines} lines` + (total ? `, ${total} bad (${kinds})` : ', none bad');
      };
      /** A Slurm run's job in one line: id, node, Slurm's state and reason. */
      const slurmJob = (r) => {
        const job = r.slurm;
        const live = r.slurm_live || {};
        const parts = [`${job.job_id} (#${job.job})`];
        if (job.node) parts.push(`on ${job.node}`);
        if (job.ended) parts.push(`ended ${job.ended}`);
        else if (live.state) parts.push(live.reason && live.reason !== 'None' ? `${live.state} (${live.reason})` : live.state);
        if (live.unreachable) parts.push('worker unreachable');
        if (job.lost) parts.push(`${job.lost} lost to the cluster`);
        return parts.join(' · ');
      };
      const run = this.run;
      const m = run.metrics || {};
      const p = run.state === 'running' || run.state === 'pausing' ? run.progress : null;
      const facts = [
        ['epochs', `${m.epochs_completed ?? 0} / ${epochsOf(run) ?? '?'}`],
        ['attempt', run.attempt],
        ['device', run.device || '–'],
        ['slots', run.slots && run.slots.length ? run.slots.join(', ') : '–'],
        ...(run.slurm ? [['slurm job', slurmJob(run)]] : []),
        ...(run.protocol ? [['progress pipe', protocolLine(run.protocol)]] : []),
        ['train loss', fmt.num(m.train_loss)],
        [run.task === 'regression' ? 'train metric' : 'train accuracy', fmt.pct(m.train_accuracy)],
        ['validation loss', fmt.num(m.val_loss)],
        [run.task === 'regression' ? 'validation MAE' : 'validation accuracy', run.task === 'regression' ? fmt.num(m.val_metric) : fmt.pct(m.val_metric)],
        ['samples/s', p ? fmt.num(p.samples_per_sec, 3) : '–'],
        ['ETA', p ? fmt.secs(p.eta_secs) : '–'],
        ['training time', fmt.secs((m.training_time_ms || 0) / 1000)],
        ['created', fmt.date(run.created_at)],
        ['checkpoint', run.checkpoint ? `epoch ${run.checkpoint.epoch}, step ${run.checkpoint.step}` : '–'],
        ['digest', run.digest ? run.digest.slice(0, 12) : '–'],
      ];
      $('run-facts').replaceChildren(
        ...facts.map(([name, value]) => el('div', {}, el('dt', {}, name), el('dd', {}, value))),
      );
    },

    draw() {
      if (this.drawPending) return;
      this.drawPending = true;
      requestAnimationFrame(() => {
        this.drawPending = false;
        drawChart($('chart-loss'), [{ cls: 'loss', points: this.loss }], { xLabel: 'step' });
        const epochs = [...this.epochs.keys()].sort((a, b) => a - b);
        const regression = this.run && this.run.task === 'regression';
        const series = [
          { cls: 'val', points: epochs.filter((e) => this.epochs.get(e).val != null).map((e) => [e, this.epochs.get(e).val]), dots: true },
        ];
        if (!regression) {
          series.unshift({
            cls: 'train',
            points: epochs.filter((e) => this.epochs.get(e).train != null).map((e) => [e, this.epochs.get(e).train]),
            dots: true,
          });
        }
        drawChart($('chart-accuracy'), series, {
          xLabel: 'epoch',
          percent: !regression,
          yMax: regression ? undefined : 1,
        });
      });
    },

    async act(action) {
      const buttons = ['run-pause', 'run-resume', 'run-cancel'].map($);
      buttons.forEach((b) => (b.disabled = true));
      try {
        const { status, body } = await api(`/api/v1/runs/${this.id}/${action}`, { method: 'POST' });
        this.run = body;
        notice(status === 202 ? `${action} asked for: the run stops at its next batch` : '');
      } catch (error) {
        notice(`${action}: ${error.message}`, true);
      }
      if (ENDED.has(this.run.state)) this.ended = true;
      this.renderRun();
      this.scheduleRefresh();
    },
  };

  function progressLabel(sample) {
    const percent = typeof sample.percent === 'number' ? sample.percent.toFixed(1) + ' %' : '';
    return `${percent} · epoch ${sample.epoch}/${sample.epochs} · batch ${sample.batch}/${sample.batches_per_epoch}`;
  }

  /** A short line of an event's fields for the timeline. */
  function summarize(event) {
    const data = event.data || {};
    switch (event.type) {
      case 'EpochCompleted':
        return `epoch ${data.epoch}: loss ${fmt.num(data.train_loss)}, accuracy ${fmt.pct(data.train_accuracy)}, ${data.duration_ms} ms`;
      case 'EpochEvaluated':
        return `epoch ${data.epoch}: validation loss ${fmt.num(data.val_loss)}, metric ${fmt.num(data.val_metric)}`;
      case 'CheckpointSaved':
        return `epoch ${data.epoch}, batch ${data.batch}, step ${data.step}, ${data.bytes} bytes`;
      default: {
        const text = JSON.stringify(data);
        return text === '{}' ? '' : text.length > 160 ? text.slice(0, 157) + '…' : text;
      }
    }
  }

  // ---------------------------------------------------------------- charts

  /** Draws line series `[{cls, points: [[x, y]], dots}]` into an SVG with axes. */
  function drawChart(node, series, options) {
    const W = 600;
    const H = 240;
    const left = 52;
    const right = 14;
    const top = 12;
    const bottom = 30;
    const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    const parts = [];
    if (!all.length) {
      node.replaceChildren(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, 'no data yet'));
      node.dataset.points = '0';
      return;
    }
    let xMin = Math.min(...all.map((p) => p[0]));
    let xMax = Math.max(...all.map((p) => p[0]));
    let yMin = Math.min(...all.map((p) => p[1]));
    let yMax = Math.max(...all.map((p) => p[1]));
    if (options.yMax !== undefined) yMax = Math.max(yMax, options.yMax);
    if (options.percent) yMin = Math.min(yMin, Math.max(0, Math.floor(yMin * 10) / 10));
    else yMin = Math.min(0, yMin);
    if (xMax === xMin) xMax = xMin + 1;
    if (yMax === yMin) yMax = yMin + 1;
    const x = (v) => left + ((v - xMin) / (xMax - xMin)) * (W - left - right);
    const y = (v) => top + (1 - (v - yMin) / (yMax - yMin)) * (H - top - bottom);
    for (let i = 0; i <= 4; i++) {
      const v = yMin + ((yMax - yMin) * i) / 4;
      parts.push(svg('line', { class: 'grid', x1: left, x2: W - right, y1: y(v), y2: y(v) }));
      parts.push(
        svg('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, options.percent ? `${Math.round(v * 100)}%` : fmt.num(v, 3)),
      );
    }
    for (let i = 0; i <= 4; i++) {
      const v = xMin + ((xMax - xMin) * i) / 4;
      parts.push(svg('text', { x: x(v), y: H - bottom + 16, 'text-anchor': 'middle' }, Math.round(v)));
    }
    parts.push(svg('line', { class: 'axis', x1: left, x2: left, y1: top, y2: H - bottom }));
    parts.push(svg('line', { class: 'axis', x1: left, x2: W - right, y1: H - bottom, y2: H - bottom }));
    parts.push(svg('text', { x: W - right, y: H - 4, 'text-anchor': 'end' }, options.xLabel));
    let drawn = 0;
    for (const s of series) {
      const points = s.points.filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
      if (!points.length) continue;
      drawn += points.length;
      parts.push(
        svg('polyline', {
          class: `series ${s.cls}`,
          points: points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' '),
          'data-points': points.length,
        }),
      );
      if (s.dots && points.length <= 200) {
        for (const [a, b] of points) parts.push(svg('circle', { class: s.cls, cx: x(a), cy: y(b), r: 2.5 }));
      }
    }
    node.replaceChildren(...parts);
    node.dataset.points = String(drawn);
  }

  // ---------------------------------------------------------------- routing

  let current = null;

  function route() {
    if (current) current.stop();
    const match = location.hash.match(/^#\/runs\/([0-9a-fA-F-]{36})$/);
    if (match) {
      current = runPage;
      runPage.start(match[1].toLowerCase());
    } else {
      document.title = 'runyard';
      current = overview;
      overview.stopped = false;
      overview.start();
    }
  }

  function init() {
    showTokenState();
    $('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      setToken($('token-input').value.trim());
      notice('');
      route();
    });
    $('token-forget').addEventListener('click', () => {
      setToken('');
      route();
    });
    $('submit-form').addEventListener('submit', submitSpec);
    $('spec-digits').addEventListener('click', () => {
      $('spec').value = JSON.stringify(CONFIG.digits_example, null, 2);
      $('spec-format').value = 'application/json';
    });
    $('run-pause').addEventListener('click', () => runPage.act('pause'));
    $('run-resume').addEventListener('click', () => runPage.act('resume'));
    $('run-cancel').addEventListener('click', () => runPage.act('cancel'));
    $('logs-stream').addEventListener('change', () => runPage.openLogs());
    $('logs-rank').addEventListener('change', () => runPage.openLogs());
    window.addEventListener('hashchange', route);
    route();
  }

  init();
})();
