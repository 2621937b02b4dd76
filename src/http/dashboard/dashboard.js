// runyard dashboard: plain JavaScript, no dependencies, no build step.
//
// Everything shown comes from /api/v1 with the token kept in sessionStorage
// (`Authorization: Bearer` on fetch; `?access_token=` on the two stream routes, since
// an EventSource cannot send headers). Live updates come from EventSource streams
// whose event ids are journal sequence numbers: the page loads what exists, then
// opens the stream with `after=` the last sequence number it holds, and the browser
// resumes with `Last-Event-ID` when the connection drops, so no event is lost or
// shown twice across a reload or a server restart.
//
// Routes, each view shown alone: `#/` the overview (a page of runs at a time with
// filters in the hash, `#/?state=failed&label=team=a&sort=name`; sweeps, queue,
// slots, submit form), `#/runs/{id}` a run's page, `#/sweeps/{id}` a sweep's page
// (its trials table, best-so-far curve, trials' validation curves and parallel
// coordinates, read again at most every 500 ms while the sweep's stream brings
// events), `#/compare/{id},{id},…` runs compared (overlaid loss and validation
// curves, the spec fields that differ).
//
// Numbers are written in the browser's locale (`3,560`, never `3.56e+3`): see `fmt`.
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

  const finite = (v) => typeof v === 'number' && Number.isFinite(v);
  /** Number formats of the browser's locale (`3,560` in English, `3.560` in German). */
  const formats = new Map();
  function numberFormat(options) {
    const key = JSON.stringify(options);
    if (!formats.has(key)) formats.set(key, new Intl.NumberFormat(undefined, options));
    return formats.get(key);
  }

  /**
   * Numbers as people write them, in the browser's locale: grouped thousands, never
   * `3.56e+3`. Counts are whole; measured values (losses, MAEs) keep a fixed number of
   * significant digits; shares are percentages; durations and sizes get units. A
   * missing value is `–`.
   */
  const fmt = {
    /** A count: `12,345`. */
    count(v) {
      return finite(v) ? numberFormat({ maximumFractionDigits: 0 }).format(v) : '–';
    },
    /**
     * A measured value with `digits` significant digits, trailing zeros kept
     * (`0.4127`, `12,350`, `1.000`); a tiny one (under 0.0001) as `3.142e-5`.
     */
    fixed(v, digits = 4) {
      if (!finite(v)) return '–';
      if (v !== 0 && Math.abs(v) < 1e-4) return v.toExponential(digits - 1);
      return numberFormat({ minimumSignificantDigits: digits, maximumSignificantDigits: digits }).format(v);
    },
    /** A value with at most `digits` significant digits (`0.001`, `3,560`, `2.5`); tiny ones as `1e-5`. */
    num(v, digits = 4) {
      if (!finite(v)) return '–';
      if (v !== 0 && Math.abs(v) < 1e-4) return v.toExponential(digits - 1).replace(/\.?0+e/, 'e');
      return numberFormat({ maximumSignificantDigits: digits }).format(v);
    },
    /** A rate (samples/s): whole from 100 on (`3,560`), else 3 significant digits. */
    rate(v) {
      if (!finite(v)) return '–';
      return Math.abs(v) >= 100 ? fmt.count(v) : fmt.num(v, 3);
    },
    /** A share from 0 to 1 as a percentage: `93.4%`. */
    pct(v, decimals = 1) {
      return finite(v)
        ? numberFormat({ style: 'percent', minimumFractionDigits: decimals, maximumFractionDigits: decimals }).format(v)
        : '–';
    },
    /** A percentage already from 0 to 100: `45.3%`. */
    percent(v) {
      return finite(v) ? fmt.pct(v / 100) : '–';
    },
    /** Bytes in binary units: `512 B`, `7.3 MiB`. */
    bytes(v) {
      if (!finite(v)) return '–';
      const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
      let i = 0;
      while (Math.abs(v) >= 1024 && i < units.length - 1) {
        v /= 1024;
        i += 1;
      }
      const digits = i === 0 ? 0 : 1;
      return numberFormat({ minimumFractionDigits: digits, maximumFractionDigits: digits }).format(v) + ' ' + units[i];
    },
    /** A duration in seconds: `340 ms`, `12.5 s`, `4 min 12 s`, `2 h 05 min`, `3 d 4 h`. */
    secs(v) {
      if (!finite(v) || v < 0) return '–';
      if (v < 1) return fmt.count(v * 1000) + ' ms';
      if (v < 60) return numberFormat({ maximumFractionDigits: 1 }).format(v) + ' s';
      const s = Math.round(v);
      const two = (n) => String(n).padStart(2, '0');
      if (s < 3600) return `${Math.floor(s / 60)} min ${two(s % 60)} s`;
      if (s < 86400) return `${Math.floor(s / 3600)} h ${two(Math.floor((s % 3600) / 60))} min`;
      return `${fmt.count(Math.floor(s / 86400))} d ${Math.floor((s % 86400) / 3600)} h`;
    },
    /** A duration in milliseconds, as `fmt.secs`. */
    ms(v) {
      return finite(v) ? fmt.secs(v / 1000) : '–';
    },
    time(iso) {
      if (!iso) return '–';
      const d = new Date(iso);
      return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
    },
    date(iso) {
      return iso ? new Date(iso).toLocaleString([], { hour12: false }) : '–';
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

  /** Calls the API with the token; answers `{status, body, headers}` or throws an ApiError. */
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
    return { status: response.status, body, headers: response.headers };
  }

  /** Every journaled event of a run after `after` (of the kinds in `types`, if given), following pages. */
  async function runEvents(id, after, types = []) {
    const all = [];
    const only = types.map((t) => `&type=${t}`).join('');
    for (;;) {
      const { body } = await api(`/api/v1/runs/${id}/events?after=${after}&limit=10000${only}`);
      all.push(...body);
      if (body.length < 10000) return all;
      after = body[body.length - 1].seq;
    }
  }

  /** A run's validation metric per epoch, from its `EpochEvaluated` events. */
  async function valCurve(id) {
    const val = new Map();
    for (const event of await runEvents(id, 0, ['EpochEvaluated'])) {
      val.set(event.data.epoch, event.data.val_accuracy ?? event.data.val_mae ?? event.data.val_metric);
    }
    return val;
  }

  /** A run's loss per sampled batch from the ticker's history (none kept: empty). */
  function lossHistory(id, points = 1024) {
    return api(`/api/v1/runs/${id}/metrics?name=loss&points=${points}`)
      .then(({ body }) => body.points.map((p) => [p.step, p.value]))
      .catch(() => []);
  }

  /** A loss history, then the live points that came in past its end (newer). */
  function withLive(history, live) {
    const last = history.length ? history[history.length - 1][0] : -1;
    return history.concat(live.filter(([step]) => step > last));
  }

  /** A list answer's `X-Total-Count` (NaN when it has none). */
  function totalOf(headers) {
    const total = headers.get('X-Total-Count');
    return total === null ? NaN : Number(total);
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
   * then, so the view can reload what it shows. Once `on.finished()` holds, an error
   * (the server ending the stream) closes it, the badge reading `on.endedText`.
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
          setLive('ended', this.on.endedText || 'run ended');
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

  /**
   * A read of what a page shows from the API, throttled, since events come in bursts:
   * `soon()` reads at most `ms` after the last read began, `now()` at once; never two
   * at once. Asked while one is under way, the read runs once more after it (at once
   * for `now()`, throttled for `soon()`), so what is shown is never older than the
   * last ask. `read` answers `true` to be read again at once (what it read was
   * already stale). `stop()` ends it: no read starts after, and the page's `read`
   * checks its own generation for the one under way.
   */
  function throttled(ms, read) {
    let timer = null;
    let running = null;
    let again = null; // null, 'soon' or 'now': asked while a read was under way
    let last = 0;
    let stopped = false;
    const self = {
      soon() {
        if (stopped || timer) return;
        if (running) {
          again = again || 'soon';
          return;
        }
        timer = setTimeout(() => {
          timer = null;
          self.now();
        }, Math.max(0, last + ms - Date.now()));
      },
      async now() {
        if (stopped) return;
        if (running) {
          again = 'now';
          return running;
        }
        clearTimeout(timer);
        timer = null;
        last = Date.now();
        running = Promise.resolve()
          .then(read)
          .catch(() => false);
        const stale = await running;
        running = null;
        const next = stale ? 'now' : again;
        again = null;
        if (next === 'now') await self.now();
        else if (next === 'soon') self.soon();
      },
      /** A read was just made another way (a page's first, a control's answer). */
      justRead() {
        last = Date.now();
      },
      stop() {
        stopped = true;
        clearTimeout(timer);
        timer = null;
      },
    };
    return self;
  }

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
    bar.querySelector('.label').textContent = label || fmt.percent(value);
  }

  function progressBar() {
    return el(
      'div',
      { class: 'progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': '0' },
      el('div', { class: 'bar' }),
      el('span', { class: 'label' }),
    );
  }

  /** Whether a run's view says it is a regression (else a classification). */
  function isRegression(run) {
    return !!run && run.task === 'regression';
  }

  /** The name of a run's validation metric: `val_accuracy`, or `val_mae` for a regression. */
  function valName(run) {
    return isRegression(run) ? 'val_mae' : 'val_accuracy';
  }

  /**
   * A run's newest validation metric: the view's `val_accuracy` (or `val_mae`) where
   * it has one, else its `val_metric` (the same number under its older name).
   */
  function valOf(run) {
    const m = (run && run.metrics) || {};
    return (isRegression(run) ? m.val_mae : m.val_accuracy) ?? m.val_metric ?? null;
  }

  /** A validation metric's value as shown: an accuracy in percent, an MAE to 4 digits. */
  function valText(run, v) {
    return isRegression(run) ? fmt.fixed(v) : fmt.pct(v);
  }

  /** The runs table's metric: validation, else (classification) training accuracy. */
  function tableMetric(run) {
    const val = valOf(run);
    if (val != null) return [valName(run), valText(run, val)];
    const m = run.metrics || {};
    if (!isRegression(run) && m.train_accuracy != null) return ['train_accuracy', fmt.pct(m.train_accuracy)];
    return ['', '–'];
  }

  // ---------------------------------------------------------------- overview

  /** Runs per page of the runs table. */
  const RUNS_PAGE = 50;
  /** The runs page is read again at most this often while events come in. */
  const RUNS_REFRESH_MS = 400;
  /** The queue, slots and sweeps are read again at most this often. */
  const SIDE_REFRESH_MS = 1000;
  /** Queued runs the queue panel shows: the head of the queue, in the API's order. */
  const QUEUE_SHOWN = 20;
  /** The orders the runs list offers: the API's `sort` values. */
  const SORTS = [
    ['-created_at', 'newest first'],
    ['created_at', 'oldest first'],
    ['-updated_at', 'updated last first'],
    ['updated_at', 'updated first first'],
    ['name', 'name A→Z'],
    ['-name', 'name Z→A'],
  ];
  /** Events that change a run's state (and so which filtered page holds it). */
  const STATE_EVENTS = new Set([
    'RunSubmitted',
    'SlotClaimed',
    'RunStarted',
    'RunCompleted',
    'RunFailed',
    'RunCancelled',
    'RunRequeued',
    'PauseRequested',
    'RunPaused',
    'RunResumed',
    'RunRetryScheduled',
    'SlotReleased',
  ]);
  /** Events after which a run trains no more (until a resume). */
  const STOPPED_EVENTS = new Set(['RunCompleted', 'RunFailed', 'RunCancelled', 'RunPaused', 'RunRequeued']);
  const SWEEP_EVENT = /^(Sweep|Trial)/;

  /**
   * The overview. The runs table shows one page of `GET /api/v1/runs` (`limit`,
   * `cursor`, `state`, `label`, `sort`: the API's order and filters, so a journal of
   * any size draws a page), with Previous and Next through the API's cursors. It
   * follows the global stream from the journal's end when the page loaded: progress
   * moves the bars of the runs on the page, and the page is read again (at most every
   * RUNS_REFRESH_MS) only for an event that can change what it shows: one about a run
   * on it, a new run where new runs land, or a state change under a state filter.
   * Queue, slots and sweeps are read on their own, after the table, when their events
   * come. Checked runs (on any page) are compared on `#/compare/ID,ID`.
   */
  const overview = {
    generation: 0,
    stopped: false,
    stream: null,
    /** The runs on the page, by id, and their rows. */
    runs: new Map(),
    rows: new Map(),
    sweepRows: new Map(),
    /** The filters and order: `{state, labels: [..], sort}`; kept while the tab lives. */
    filters: { state: '', labels: [], sort: '-created_at' },
    /** The cursor of each page reached (`null` for the first) and the page shown. */
    cursors: [null],
    page: 0,
    /** The page after this one's cursor, or null on the last page. */
    next: null,
    /** How many runs match the filters in all (`X-Total-Count`). */
    total: NaN,
    /** Runs checked for comparison: id → name, across pages and filters. */
    selected: new Map(),
    /** Runs named in the slots table but not on the page: id → view. */
    slotRuns: new Map(),
    /** The page's reader and the queue, slots and sweeps' (see `throttled`). */
    runsRead: null,
    sideRead: null,
    firstDrawn: false,

    async start(params) {
      // A newer start (the token changed meanwhile) makes this one stop where it is.
      const generation = ++this.generation;
      const stale = () => this.stopped || generation !== this.generation;
      this.stopReads();
      this.runsRead = throttled(RUNS_REFRESH_MS, () => this.readRuns());
      this.sideRead = throttled(SIDE_REFRESH_MS, () => this.readSide());
      if (params) this.readParams(params);
      else if (this.filterQuery().toString()) history.replaceState(null, '', `#/?${this.filterQuery()}`);
      this.showFilters();
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
      // The table first: the queue, slots and sweeps come after it is drawn.
      await this.refresh();
      if (stale()) return;
      this.sideRead.now();
      this.stream = new LiveStream('/api/v1/stream', { every: OVERVIEW_EVERY }, after, {
        event: (event) => this.event(event),
        progress: (sample) => this.progress(sample),
        reopened: () => {
          this.runsRead.soon();
          this.sideRead.soon();
        },
      });
      this.stream.open();
    },

    stop() {
      this.stopped = true;
      if (this.stream) this.stream.close();
      this.stream = null;
      this.stopReads();
      $('overview').hidden = true;
    },

    stopReads() {
      if (this.runsRead) this.runsRead.stop();
      if (this.sideRead) this.sideRead.stop();
    },

    /** The filters from the hash's query (`#/?state=failed&label=team=a&sort=name`). */
    readParams(params) {
      const sorts = SORTS.map(([value]) => value);
      const state = params.get('state') || '';
      this.filters = {
        state: CONFIG.run_states.includes(state) ? state : '',
        labels: params.getAll('label').filter(Boolean),
        sort: sorts.includes(params.get('sort')) ? params.get('sort') : '-created_at',
      };
      this.cursors = [null];
      this.page = 0;
    },

    /** The filter controls show the filters in force. */
    showFilters() {
      $('filter-state').value = this.filters.state;
      $('filter-label').value = this.filters.labels.join(', ');
      $('filter-sort').value = this.filters.sort;
    },

    /** Reads the filter controls, puts them in the address, and shows their first page. */
    applyFilters() {
      this.filters = {
        state: $('filter-state').value,
        labels: $('filter-label')
          .value.split(',')
          .map((l) => l.trim())
          .filter(Boolean),
        sort: $('filter-sort').value,
      };
      const query = this.filterQuery();
      const hash = query.toString() ? `#/?${query}` : '#/';
      if (location.hash !== hash) history.replaceState(null, '', hash);
      this.cursors = [null];
      this.page = 0;
      this.refresh();
    },

    /** The filters and order as the API's query parameters. */
    filterQuery() {
      const query = new URLSearchParams();
      if (this.filters.state) query.set('state', this.filters.state);
      for (const label of this.filters.labels) query.append('label', label);
      if (this.filters.sort !== '-created_at') query.set('sort', this.filters.sort);
      return query;
    },

    /** Shows the page `delta` pages on (1 next, -1 previous). */
    turn(delta) {
      const page = this.page + delta;
      if (page < 0 || (delta > 0 && !this.next)) return;
      if (delta > 0) this.cursors[page] = this.next;
      this.page = page;
      this.refresh();
    },

    /** A lifecycle event from the global stream: reads again what it may change. */
    event(event) {
      if (SWEEP_EVENT.test(event.type)) {
        this.scheduleSide();
        return;
      }
      if (STATE_EVENTS.has(event.type)) this.scheduleSide();
      if (this.concerns(event)) this.scheduleRefresh();
    },

    /** Whether `event` can change the page shown. */
    concerns(event) {
      if (this.runs.has(event.run_id)) return true;
      const sort = this.filters.sort;
      const last = !this.next;
      // Any event moves its run to the start (or end) of the updated order.
      if (sort === '-updated_at') return this.page === 0;
      if (sort === 'updated_at') return last;
      if (this.filters.state && STATE_EVENTS.has(event.type)) return true;
      if (event.type !== 'RunSubmitted') return false;
      if (sort === '-created_at') return this.page === 0;
      if (sort === 'created_at') return last;
      return true; // by name: any page may gain it
    },

    /** Reads the page again soon, at most every RUNS_REFRESH_MS: events come in bursts. */
    scheduleRefresh() {
      if (this.runsRead) this.runsRead.soon();
    },

    /** Reads the page now (a filter, a turn of the page): done when it is drawn. */
    refresh() {
      return this.runsRead ? this.runsRead.now() : Promise.resolve();
    },

    /** One read of the page; `true` when it must be read again at once. */
    async readRuns() {
      const query = this.filterQuery();
      query.set('limit', String(RUNS_PAGE));
      const cursor = this.cursors[this.page];
      if (cursor) query.set('cursor', cursor);
      try {
        const { body, headers } = await api(`/api/v1/runs?${query}`);
        if (this.stopped) return false;
        notice('');
        this.next = headers.get('X-Next-Cursor');
        this.total = totalOf(headers);
        if (!body.length && this.page > 0) {
          // The page emptied (its runs moved on): back to the first.
          this.cursors = [null];
          this.page = 0;
          return true;
        }
        this.renderRuns(body);
      } catch (error) {
        if (error.status === 400 && error.problem && error.problem.code === 'invalid_query') {
          // A cursor the server no longer knows, or a label it refuses: say which.
          notice('cannot list the runs: ' + error.message, true);
        } else if (error.status !== 401 && error.status !== 403) {
          notice('cannot load the runs: ' + error.message, true);
        }
      }
      return false;
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
      const filtered = this.filters.state || this.filters.labels.length;
      $('runs-empty').textContent = filtered ? 'No runs match these filters.' : 'No runs yet: submit one below.';
      $('runs-empty').hidden = runs.length > 0;
      const from = this.page * RUNS_PAGE;
      const of = Number.isFinite(this.total) && this.total >= from + runs.length ? ` of ${fmt.count(this.total)}` : '';
      $('runs-page').textContent = runs.length
        ? `runs ${fmt.count(from + 1)}–${fmt.count(from + runs.length)}${of}`
        : '';
      $('runs-prev').disabled = this.page === 0;
      $('runs-next').disabled = !this.next;
      $('runs').dataset.page = String(this.page);
      this.showSelection();
      if (!this.firstDrawn) {
        this.firstDrawn = true;
        // After the frame that shows the rows: the time from navigation to a drawn
        // table, which the browser test reads (`runyard:runs-drawn`).
        requestAnimationFrame(() => setTimeout(() => performance.mark('runyard:runs-drawn'), 0));
      }
    },

    newRow(run) {
      const pick = el('input', { type: 'checkbox', class: 'pick', 'aria-label': `compare ${run.name}`, 'data-run-id': run.id });
      pick.addEventListener('change', () => {
        if (pick.checked) this.selected.set(run.id, run.name);
        else this.selected.delete(run.id);
        this.showSelection();
      });
      const cells = {
        pick,
        name: el('td', {}, el('a', { href: `#/runs/${run.id}`, class: 'run-link' }, run.name)),
        state: el('td', { class: 'state-cell' }),
        progress: progressBar(),
        epoch: el('td', { class: 'num epoch' }),
        loss: el('td', { class: 'num loss' }),
        metric: el('td', { class: 'num metric' }),
        slot: el('td', { class: 'slot' }),
        updated: el('td', { class: 'num updated' }),
      };
      const tr = el(
        'tr',
        { 'data-run-id': run.id },
        el('td', { class: 'pick' }, pick),
        cells.name,
        cells.state,
        el('td', {}, cells.progress),
        cells.epoch,
        cells.loss,
        cells.metric,
        cells.slot,
        cells.updated,
      );
      return { tr, cells };
    },

    fillRow(row, run) {
      const { cells } = row;
      row.tr.dataset.state = run.state;
      cells.pick.checked = this.selected.has(run.id);
      cells.state.replaceChildren(stateBadge(run.state));
      setProgress(cells.progress, percentOf(run), run.state);
      const epochs = epochsOf(run);
      const epoch = run.progress ? run.progress.epoch : run.metrics.epochs_completed;
      cells.epoch.textContent = `${fmt.count(epoch)} / ${epochs == null ? '?' : fmt.count(epochs)}`;
      cells.loss.textContent = fmt.fixed(run.progress && run.progress.loss != null ? run.progress.loss : run.metrics.train_loss);
      const [name, value] = tableMetric(run);
      cells.metric.replaceChildren(name ? el('span', { class: 'metric-name' }, name + ' ') : '', value);
      cells.metric.dataset.metric = name;
      cells.slot.textContent = run.slurm
        ? `slurm ${run.slurm.job_id}${run.slurm_live && run.slurm_live.state ? ` ${run.slurm_live.state}` : ''}${run.slurm_live && run.slurm_live.unreachable ? ' (unreachable)' : ''}`
        : run.slots && run.slots.length ? `${run.slots.join(', ')} (${run.device || '?'})` : '–';
      cells.updated.textContent = fmt.time(run.updated_at);
    },

    /** The compare bar: how many runs are checked, and Compare from two on. */
    showSelection() {
      const n = this.selected.size;
      $('compare-count').textContent = n ? `${fmt.count(n)} checked to compare` : 'check runs to compare them';
      $('compare-open').disabled = n < 2;
      $('compare-clear').disabled = n === 0;
    },

    compare() {
      if (this.selected.size >= 2) location.hash = `#/compare/${[...this.selected.keys()].join(',')}`;
    },

    clearSelection() {
      this.selected.clear();
      for (const row of this.rows.values()) row.cells.pick.checked = false;
      this.showSelection();
    },

    /** A live sample: moves the bar of a run on the page; others are not shown. */
    progress(sample) {
      const row = this.rows.get(sample.run_id);
      const run = this.runs.get(sample.run_id);
      if (!row || !run || ENDED.has(run.state)) return;
      setProgress(row.cells.progress, sample.percent, run.state);
      row.cells.epoch.textContent = `${fmt.count(sample.epoch)} / ${fmt.count(sample.epochs)}`;
      if (sample.loss != null) row.cells.loss.textContent = fmt.fixed(sample.loss);
    },

    /** Reads the queue, slots and sweeps again soon, at most every SIDE_REFRESH_MS. */
    scheduleSide() {
      if (this.sideRead) this.sideRead.soon();
    },

    /** One read of the queue, slots and sweeps. */
    async readSide() {
      try {
        const [queued, slots, sweeps] = await Promise.all([
          api(`/api/v1/runs?state=queued&sort=queue&limit=${QUEUE_SHOWN}`),
          api('/api/v1/slots'),
          // The runs show without the sweeps (a server without them answers 404).
          api('/api/v1/sweeps').catch(() => null),
        ]);
        if (this.stopped) return false;
        this.renderQueue(queued.body, totalOf(queued.headers));
        await this.renderSlots(slots.body);
        if (sweeps) this.renderSweeps(sweeps.body);
      } catch (error) {
        if (error.status !== 401 && error.status !== 403) notice('cannot load the queue and slots: ' + error.message, true);
      }
      return false;
    },

    /** The sweeps, newest first; rows are kept (and moved) so a link stays clickable. */
    renderSweeps(sweeps) {
      const body = $('sweeps-body');
      const seen = new Set();
      for (const sweep of sweeps) {
        seen.add(sweep.id);
        let row = this.sweepRows.get(sweep.id);
        if (!row) {
          const cells = {
            name: el('td', {}, el('a', { href: `#/sweeps/${sweep.id}`, class: 'sweep-link' }, sweep.name)),
            state: el('td', { class: 'state-cell' }),
            searcher: el('td', { class: 'searcher' }),
            metric: el('td', { class: 'metric-name' }),
            trials: el('td', { class: 'num trials' }),
            best: el('td', { class: 'num best' }),
            updated: el('td', { class: 'num updated' }),
          };
          row = { tr: el('tr', { 'data-sweep-id': sweep.id }, ...Object.values(cells)), cells };
          this.sweepRows.set(sweep.id, row);
        }
        const { cells } = row;
        row.tr.dataset.state = sweep.state;
        cells.state.replaceChildren(stateBadge(sweep.state));
        cells.searcher.textContent = sweep.searcher;
        cells.metric.textContent = `${sweep.metric} (${sweep.mode})`;
        cells.trials.textContent = trialCounts(sweep);
        cells.best.replaceChildren(
          sweep.best
            ? el('a', { href: `#/runs/${sweep.best.run_id}` }, `${metricText(sweep, sweep.best.metric)} · trial ${sweep.best.number}`)
            : '–',
        );
        cells.updated.textContent = fmt.time(sweep.updated_at);
        body.append(row.tr);
      }
      for (const [id, row] of this.sweepRows) {
        if (!seen.has(id)) {
          row.tr.remove();
          this.sweepRows.delete(id);
        }
      }
      $('sweeps-empty').hidden = sweeps.length > 0;
    },

    /**
     * The first QUEUE_SHOWN waiting runs in dispatch order (`sort=queue`: local runs
     * by `queue_position`, then the others), and how many others wait (`total`, the
     * list's `X-Total-Count`, less those shown).
     */
    renderQueue(queued, total) {
      const list = $('queue');
      list.replaceChildren(
        ...queued.map((run) =>
          el(
            'li',
            { 'data-run-id': run.id, value: run.queue_position || undefined },
            el('a', { href: `#/runs/${run.id}` }, run.name),
            ` · priority ${run.priority}`,
            run.spec && run.spec.slots > 1 ? ` · ${run.spec.slots} slots` : '',
            run.not_before ? ` · retry after ${fmt.time(run.not_before)}` : '',
            run.attempt ? ` · attempt ${run.attempt + 1}` : '',
          ),
        ),
      );
      const rest = Number.isFinite(total) ? Math.max(total - queued.length, 0) : 0;
      $('queue-more').textContent = rest
        ? `and ${fmt.count(rest)} others wait (filter the runs by state queued to see them all)`
        : '';
      $('queue-more').hidden = !rest;
      $('queue-empty').hidden = queued.length > 0;
    },

    /** The slots, each with the run it holds (read alone when it is not on the page). */
    async renderSlots(slots) {
      const held = slots.map((slot) => slot.run_id).filter(Boolean);
      const missing = held.filter((id) => !this.runs.has(id));
      const read = await Promise.all(
        missing.map((id) =>
          api(`/api/v1/runs/${id}`)
            .then(({ body }) => body)
            .catch(() => null),
        ),
      );
      this.slotRuns = new Map(read.filter(Boolean).map((run) => [run.id, run]));
      if (this.stopped) return;
      $('slots-body').replaceChildren(
        ...slots.map((slot) => {
          const run = slot.run_id ? this.runs.get(slot.run_id) || this.slotRuns.get(slot.run_id) : null;
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

  /** A run's view is read again at most this often while its events come in. */
  const RUN_REFRESH_MS = 150;

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
    /** An ended run's mean samples/s over what the ticker sampled (null: none kept). */
    meanRate: null,
    rateAsked: false,
    /** Reads the run's view again after its events (see `throttled`). */
    reader: null,
    drawPending: false,
    logSource: null,
    logKey: '',

    async start(id) {
      const generation = ++this.generation;
      const stale = () => this.stopped || generation !== this.generation;
      Object.assign(this, { id, run: null, ended: false, events: [], loss: [], epochs: new Map(), meanRate: null, rateAsked: false, stopped: false });
      if (this.reader) this.reader.stop();
      this.reader = throttled(RUN_REFRESH_MS, () => this.readRun(generation));
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
        this.rateAsked = true;
        await this.loadMeanRate(generation);
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
      if (this.reader) this.reader.stop();
      $('run-view').hidden = true;
    },

    async loadLossHistory() {
      // Without a history, the chart fills from the stream.
      this.loss = withLive(await lossHistory(this.id, 2048), this.loss);
      this.draw();
    },

    /**
     * An ended run's throughput: the mean of the samples/s the ticker sampled while it
     * trained (kept in memory: none after a server restart, and the fact shows `–`).
     */
    async loadMeanRate(generation) {
      try {
        const { body } = await api(`/api/v1/runs/${this.id}/metrics?name=samples_per_sec&points=2048`);
        if (this.stopped || generation !== this.generation) return;
        const rates = body.points.map((p) => p.value).filter((v) => Number.isFinite(v) && v > 0);
        this.meanRate = rates.length ? rates.reduce((a, b) => a + b, 0) / rates.length : null;
        this.renderRun();
      } catch (_) {
        // The fact stays `–`.
      }
    },

    /** Reads the run's view again soon, at most every RUN_REFRESH_MS. */
    scheduleRefresh() {
      if (this.reader) this.reader.soon();
    },

    async readRun(generation) {
      try {
        const { body } = await api(`/api/v1/runs/${this.id}`);
        if (this.stopped || generation !== this.generation || body.id !== this.id) return false;
        this.run = body;
        const ending = ENDED.has(body.state) && this.meanRate === null && !this.rateAsked;
        if (ENDED.has(body.state)) this.ended = true;
        this.renderRun();
        if (ending) {
          this.rateAsked = true;
          this.loadMeanRate(generation);
        }
      } catch (_) {
        // Shown by api(); the next event tries again.
      }
      return false;
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
        entry.val = data.val_accuracy ?? data.val_mae ?? data.val_metric;
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
          el('span', { class: 'data', title: JSON.stringify(data) }, summarize(event, this.run)),
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
      $('chart-accuracy-title').firstChild.textContent = isRegression(run) ? 'val_mae ' : 'Accuracy ';
      $('chart-val-name').textContent = valName(run);
      $('chart-train-key').hidden = isRegression(run);
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
        ...(run.labels && run.labels.sweep
          ? [['sweep', el('a', { href: `#/sweeps/${run.labels.sweep}`, class: 'sweep-link' }, `trial ${run.labels.trial ?? '?'} of its sweep`)]]
          : []),
        ['device', run.device || '–'],
        ['slots', run.slots && run.slots.length ? run.slots.join(', ') : '–'],
        ...(run.slurm ? [['slurm job', slurmJob(run)]] : []),
        ...(run.protocol ? [['progress pipe', protocolLine(run.protocol)]] : []),
        ['train_loss', fmt.fixed(m.train_loss)],
        ...(isRegression(run) ? [] : [['train_accuracy', fmt.pct(m.train_accuracy)]]),
        ['val_loss', fmt.fixed(m.val_loss)],
        [valName(run), valText(run, valOf(run))],
        ['samples/s', p ? fmt.rate(p.samples_per_sec) : this.meanRate != null ? `${fmt.rate(this.meanRate)} (mean)` : '–'],
        ['ETA', p ? fmt.secs(p.eta_secs) : '–'],
        ['training time', fmt.ms(m.training_time_ms || 0)],
        ['created', fmt.date(run.created_at)],
        [
          'checkpoint',
          run.checkpoint
            ? `epoch ${fmt.count(run.checkpoint.epoch)}, step ${fmt.count(run.checkpoint.step)}` +
              (run.checkpoint.bytes != null ? `, ${fmt.bytes(run.checkpoint.bytes)}` : '')
            : '–',
        ],
        ['digest', run.digest ? run.digest.slice(0, 12) : '–'],
      ];
      $('run-facts').replaceChildren(
        ...facts.map(([name, value]) => el('div', { 'data-fact': name }, el('dt', {}, name), el('dd', {}, value))),
      );
    },

    draw() {
      if (this.drawPending) return;
      this.drawPending = true;
      requestAnimationFrame(() => {
        this.drawPending = false;
        drawChart($('chart-loss'), [{ cls: 'loss', points: this.loss }], { xLabel: 'step' });
        const epochs = [...this.epochs.keys()].sort((a, b) => a - b);
        const regression = isRegression(this.run);
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
    const percent = typeof sample.percent === 'number' ? fmt.percent(sample.percent) : '';
    const c = fmt.count;
    return `${percent} · epoch ${c(sample.epoch)}/${c(sample.epochs)} · batch ${c(sample.batch)}/${c(sample.batches_per_epoch)}`;
  }

  /** A short line of an event's fields for the timeline; `run` names its metrics. */
  function summarize(event, run) {
    const data = event.data || {};
    switch (event.type) {
      case 'EpochCompleted':
        return (
          `epoch ${fmt.count(data.epoch)}: train_loss ${fmt.fixed(data.train_loss)}` +
          (isRegression(run) ? '' : `, train_accuracy ${fmt.pct(data.train_accuracy)}`) +
          `, ${fmt.ms(data.duration_ms)}`
        );
      case 'EpochEvaluated': {
        const val = data.val_accuracy ?? data.val_mae ?? data.val_metric;
        return `epoch ${fmt.count(data.epoch)}: val_loss ${fmt.fixed(data.val_loss)}, ${valName(run)} ${valText(run, val)}`;
      }
      case 'RunCompleted':
        return `train_loss ${fmt.fixed(data.train_loss)}` + (isRegression(run) ? '' : `, train_accuracy ${fmt.pct(data.train_accuracy)}`);
      case 'CheckpointSaved':
        return `epoch ${fmt.count(data.epoch)}, batch ${fmt.count(data.batch)}, step ${fmt.count(data.step)}, ${fmt.bytes(data.bytes)}`;
      default: {
        const text = JSON.stringify(data);
        return text === '{}' ? '' : text.length > 160 ? text.slice(0, 157) + '…' : text;
      }
    }
  }

  // ---------------------------------------------------------------- sweep page

  const SWEEP_ENDED = new Set(['completed', 'cancelled']);
  const SWEEP_END_EVENTS = new Set(['SweepCompleted', 'SweepCancelled']);
  /** The sweep is read again at most this often while its events come in. */
  const SWEEP_REFRESH_MS = 500;
  const TRIAL_STATUSES = ['training', 'waiting', 'finished', 'stopped', 'failed'];

  /** Whether a sweep's metric is a share (shown in percent). */
  function isShare(sweep) {
    return /accuracy/.test((sweep && sweep.metric) || '');
  }

  /** A metric value of `sweep` as shown: a share in percent, else 4 digits. */
  function metricText(sweep, v) {
    if (typeof v !== 'number' || !Number.isFinite(v)) return '–';
    return isShare(sweep) ? fmt.pct(v, 2) : fmt.fixed(v, 4);
  }

  /** A point's value as shown: numbers short, lists and objects as JSON. */
  function valueText(v) {
    if (v === undefined || v === null) return '–';
    // Small whole numbers as written in a spec (a batch size of 1024), larger ones grouped.
    if (typeof v === 'number') return Number.isInteger(v) ? (Math.abs(v) < 10000 ? String(v) : fmt.count(v)) : fmt.num(v, 3);
    if (typeof v === 'string') return v;
    return JSON.stringify(v);
  }

  /** Orders two point values: numbers by value, lists element by element, else as text. */
  function compareValues(a, b) {
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    if (Array.isArray(a) && Array.isArray(b)) {
      for (let i = 0; i < Math.min(a.length, b.length); i++) {
        const c = compareValues(a[i], b[i]);
        if (c) return c;
      }
      return a.length - b.length;
    }
    const text = (v) => (typeof v === 'string' ? v : JSON.stringify(v));
    return text(a).localeCompare(text(b));
  }

  /** `12 / 27 ended · 2 training`: the trials by where the searcher has them. */
  function trialCounts(sweep) {
    const c = sweep.counts || {};
    const ended = (c.finished || 0) + (c.stopped || 0) + (c.failed || 0);
    const live = [];
    if (c.training) live.push(`${c.training} training`);
    if (c.waiting) live.push(`${c.waiting} waiting`);
    return `${ended} / ${sweep.max_trials} ended` + (live.length ? ' · ' + live.join(', ') : '');
  }

  /** The point's fields: the space's order, then any other a trial has. */
  function sweepFields(sweep) {
    const fields = [];
    const space = sweep.spec && sweep.spec.space;
    if (space && typeof space === 'object') fields.push(...Object.keys(space));
    for (const trial of sweep.trials || []) {
      for (const key of Object.keys(trial.point || {})) if (!fields.includes(key)) fields.push(key);
    }
    return fields;
  }

  /** One trial's value of the trials table's column `key`. */
  function sortValue(trial, key) {
    if (key.startsWith('point:')) return (trial.point || {})[key.slice(6)];
    if (key === 'rung') return trial.rung;
    return trial[key];
  }

  /**
   * The trials ordered by column `key`, `dir` 1 ascending or -1 descending: a missing
   * value (no metric yet, no rung) last either way, ties by trial number.
   */
  function sortTrials(trials, key, dir) {
    const missing = (v) => v === undefined || v === null || (typeof v === 'number' && !Number.isFinite(v));
    return [...trials].sort((a, b) => {
      const va = sortValue(a, key);
      const vb = sortValue(b, key);
      if (missing(va) || missing(vb)) {
        if (missing(va) !== missing(vb)) return missing(va) ? 1 : -1;
      } else {
        const c = compareValues(va, vb);
        if (c) return dir * c;
      }
      return a.number - b.number;
    });
  }

  const sweepPage = {
    generation: 0,
    stopped: false,
    id: null,
    sweep: null,
    stream: null,
    ended: false,
    /** Reads the sweep again after its events (see `throttled`). */
    reader: null,
    drawPending: false,
    /** The trials table's order: a column key and 1 (ascending) or -1 (descending). */
    sort: { key: 'number', dir: 1 },
    rows: new Map(),
    columnsKey: '',

    async start(id) {
      const generation = ++this.generation;
      const stale = () => this.stopped || generation !== this.generation;
      Object.assign(this, {
        id,
        sweep: null,
        ended: false,
        stopped: false,
        rows: new Map(),
        columnsKey: '',
        sort: { key: 'number', dir: 1 },
      });
      if (this.reader) this.reader.stop();
      this.reader = throttled(SWEEP_REFRESH_MS, () => this.load(generation));
      ['sweep-pause', 'sweep-resume', 'sweep-cancel'].forEach((b) => ($(b).disabled = true));
      $('sweep-name').textContent = '…';
      $('sweep-id').textContent = id;
      $('sweep-state').replaceChildren();
      delete $('sweep-state').dataset.state;
      $('sweep-facts').replaceChildren();
      $('sweep-best').replaceChildren();
      $('sweep-reason').hidden = true;
      setProgress($('sweep-progress'), 0, '', ' ');
      $('sweep-trials-head').replaceChildren();
      $('sweep-trials-body').replaceChildren();
      for (const chart of ['sweep-best-curve', 'sweep-curves', 'sweep-parallel']) $(chart).replaceChildren();
      $('sweep-view').hidden = false;
      setLive('connecting');
      // The journal's end first, then the sweep: the sweep read holds at least every
      // event up to it, and the stream goes on from there.
      let after = 0;
      try {
        const response = await fetch('/readyz', { cache: 'no-store' });
        if (response.ok) after = (await response.json()).last_seq || 0;
      } catch (_) {
        // The stream's retries find the server when it is back.
      }
      if (stale()) return;
      try {
        this.sweep = (await api(`/api/v1/sweeps/${id}`)).body;
      } catch (error) {
        $('sweep-name').textContent = error.status === 404 ? 'no such sweep' : 'cannot load the sweep';
        if (error.status !== 401) notice(error.message, true);
        return;
      }
      if (stale()) return;
      this.reader.justRead();
      this.render();
      if (this.ended) {
        setLive('ended', 'sweep ended');
        return;
      }
      this.stream = new LiveStream(`/api/v1/sweeps/${id}/stream`, { every: '1s' }, after, {
        event: (event) => {
          if (SWEEP_END_EVENTS.has(event.type)) this.ended = true;
          this.scheduleRefresh();
        },
        progress: () => {},
        reopened: () => this.scheduleRefresh(),
        finished: () => this.ended,
        endedText: 'sweep ended',
      });
      this.stream.open();
    },

    stop() {
      this.stopped = true;
      if (this.stream) this.stream.close();
      this.stream = null;
      if (this.reader) this.reader.stop();
      $('sweep-view').hidden = true;
    },

    /** Reads the sweep again soon, at most every SWEEP_REFRESH_MS: events come in bursts. */
    scheduleRefresh() {
      if (this.reader) this.reader.soon();
    },

    async load(generation) {
      try {
        const { body } = await api(`/api/v1/sweeps/${this.id}`);
        if (!this.stopped && generation === this.generation && body.id === this.id) {
          this.sweep = body;
          this.render();
        }
      } catch (_) {
        // Shown by api(); the next event tries again.
      }
      return false;
    },

    render() {
      const sweep = this.sweep;
      if (!sweep) return;
      if (SWEEP_ENDED.has(sweep.state)) this.ended = true;
      document.title = `${sweep.name} · sweep · runyard`;
      $('sweep-name').textContent = sweep.name;
      $('sweep-state').replaceChildren(stateBadge(sweep.state));
      $('sweep-state').dataset.state = sweep.state;
      $('sweep-pause').disabled = sweep.state !== 'running';
      $('sweep-resume').disabled = sweep.state !== 'paused';
      $('sweep-cancel').disabled = SWEEP_ENDED.has(sweep.state);
      const c = sweep.counts || {};
      const ended = (c.finished || 0) + (c.stopped || 0) + (c.failed || 0);
      const percent = sweep.state === 'completed' ? 100 : sweep.max_trials ? (100 * ended) / sweep.max_trials : 0;
      setProgress($('sweep-progress'), percent, sweep.state, trialCounts(sweep));
      $('sweep-reason').hidden = !sweep.reason;
      $('sweep-reason').textContent = sweep.reason ? `cancelled: ${sweep.reason}` : '';
      this.renderFacts();
      this.renderBest();
      this.renderTrials();
      this.draw();
    },

    renderFacts() {
      const sweep = this.sweep;
      const c = sweep.counts || {};
      const facts = [
        ['searcher', sweep.searcher],
        ['metric', `${sweep.metric} (${sweep.mode})`],
        ['rungs', sweep.rungs && sweep.rungs.length ? `epochs ${sweep.rungs.join(' · ')}` : '–'],
        ['trials', `${(sweep.trials || []).length} of ${sweep.max_trials}`],
        ['at once', sweep.max_concurrent],
        ...TRIAL_STATUSES.map((status) => [status, c[status] || 0]),
        ['created', fmt.date(sweep.created_at)],
        ['updated', fmt.time(sweep.updated_at)],
      ];
      $('sweep-facts').replaceChildren(
        ...facts.map(([name, value]) => el('div', { 'data-fact': name }, el('dt', {}, name), el('dd', {}, value))),
      );
    },

    renderBest() {
      const sweep = this.sweep;
      const best = sweep.best;
      const line = $('sweep-best');
      if (!best) {
        delete line.dataset.trial;
        delete line.dataset.metric;
        line.replaceChildren(el('span', { class: 'muted' }, 'No best trial yet: none has finished a rung.'));
        return;
      }
      line.dataset.trial = String(best.number);
      line.dataset.metric = best.metric == null ? '' : String(best.metric);
      const point = Object.entries(best.point || {}).map(([k, v]) => `${k} ${valueText(v)}`);
      line.replaceChildren(
        el('span', { class: 'label' }, sweep.state === 'completed' ? 'Best trial ' : 'Best so far '),
        el('a', { href: `#/runs/${best.run_id}`, class: 'best-run', 'data-run-id': best.run_id }, `trial ${best.number}`),
        ' · ',
        el('strong', { class: 'best-metric' }, `${sweep.metric} ${metricText(sweep, best.metric)}`),
        ` after ${best.epochs} epochs · `,
        el('span', { class: 'muted' }, point.join(', ')),
      );
    },

    /** The trials table: its header when the columns change, rows kept by trial. */
    renderTrials() {
      const sweep = this.sweep;
      const trials = sweep.trials || [];
      const fields = sweepFields(sweep);
      const columns = [
        ['number', '#'],
        ...fields.map((f) => [`point:${f}`, f]),
        ['status', 'status'],
        ['rung', 'rung'],
        ['metric', sweep.metric || 'metric'],
        ['epochs', 'epochs'],
        ['run_state', 'run state'],
      ];
      const columnsKey = JSON.stringify(columns);
      if (columnsKey !== this.columnsKey) {
        this.columnsKey = columnsKey;
        this.rows = new Map();
        $('sweep-trials-body').replaceChildren();
        $('sweep-trials-head').replaceChildren(
          ...columns.map(([key, label]) =>
            el(
              'th',
              { 'data-sort': key, class: `sortable${key === 'metric' || key === 'number' || key === 'epochs' || key === 'rung' ? ' num' : ''}`, title: 'sort by this column' },
              label,
            ),
          ),
          el('th', {}, 'run'),
        );
        for (const th of $('sweep-trials-head').querySelectorAll('th[data-sort]')) {
          th.addEventListener('click', () => this.sortBy(th.dataset.sort));
        }
      }
      const bestNumber = sweep.best ? sweep.best.number : null;
      for (const trial of trials) {
        let row = this.rows.get(trial.number);
        if (!row) {
          const cells = {
            number: el('td', { class: 'num' }, trial.number),
            fields: fields.map((f) => el('td', { class: 'point', 'data-field': f })),
            status: el('td', { class: 'status' }),
            rung: el('td', { class: 'num rung' }),
            metric: el('td', { class: 'num metric' }),
            epochs: el('td', { class: 'num epochs' }),
            runState: el('td', { class: 'state-cell' }),
            run: el('td', {}, el('a', { href: `#/runs/${trial.run_id}`, class: 'run-link', title: trial.run_id }, 'open run')),
          };
          const tr = el(
            'tr',
            { 'data-trial': trial.number, 'data-run-id': trial.run_id },
            cells.number,
            ...cells.fields,
            cells.status,
            cells.rung,
            cells.metric,
            cells.epochs,
            cells.runState,
            cells.run,
          );
          row = { tr, cells };
          this.rows.set(trial.number, row);
        }
        const { tr, cells } = row;
        tr.dataset.status = trial.status;
        tr.classList.toggle('best', trial.number === bestNumber);
        fields.forEach((f, i) => (cells.fields[i].textContent = valueText((trial.point || {})[f])));
        cells.status.replaceChildren(el('span', { class: 'trial-status', 'data-status': trial.status }, trial.status));
        cells.rung.textContent = trial.rung ?? '–';
        cells.metric.textContent = metricText(sweep, trial.metric);
        cells.metric.dataset.value = trial.metric == null ? '' : String(trial.metric);
        cells.metric.title = trial.results && trial.results.length
          ? 'per rung: ' + trial.results.map((r) => metricText(sweep, r)).join(' → ')
          : '';
        cells.epochs.textContent = trial.epochs;
        cells.runState.replaceChildren(trial.run_state ? stateBadge(trial.run_state) : '–');
      }
      this.orderRows();
      $('sweep-trials-empty').hidden = trials.length > 0;
    },

    /** Sorts by a column: again on the same one reverses; the metric starts best first. */
    sortBy(key) {
      if (this.sort.key === key) this.sort.dir = -this.sort.dir;
      else this.sort = { key, dir: key === 'metric' && this.sweep && this.sweep.mode === 'max' ? -1 : 1 };
      this.orderRows();
    },

    orderRows() {
      const sweep = this.sweep;
      if (!sweep) return;
      const { key, dir } = this.sort;
      const body = $('sweep-trials-body');
      for (const trial of sortTrials(sweep.trials || [], key, dir)) {
        const row = this.rows.get(trial.number);
        if (row) body.append(row.tr);
      }
      const table = $('sweep-trials');
      table.dataset.sortKey = key;
      table.dataset.sortDir = dir > 0 ? 'ascending' : 'descending';
      for (const th of $('sweep-trials-head').querySelectorAll('th[data-sort]')) {
        if (th.dataset.sort === key) th.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
        else th.removeAttribute('aria-sort');
      }
    },

    draw() {
      if (this.drawPending) return;
      this.drawPending = true;
      requestAnimationFrame(() => {
        this.drawPending = false;
        const sweep = this.sweep;
        if (!sweep || this.stopped) return;
        const share = isShare(sweep);
        const trials = sweep.trials || [];
        const bestNumber = sweep.best ? sweep.best.number : null;

        // Best so far: every rung result in journal order, and the running best.
        const better = (a, b) => (sweep.mode === 'min' ? a < b : a > b);
        const results = [];
        const running = [];
        let best = null;
        (sweep.results || []).forEach((r, i) => {
          if (typeof r.metric !== 'number' || !Number.isFinite(r.metric)) return;
          results.push([i + 1, r.metric]);
          if (best === null || better(r.metric, best)) best = r.metric;
          running.push([i + 1, best]);
        });
        const curve = $('sweep-best-curve');
        drawChart(
          curve,
          [
            { cls: 'result', points: results, dots: true, line: false },
            { cls: 'best', points: running },
          ],
          { xLabel: 'rung result', percent: share },
        );
        curve.dataset.best = best === null ? '' : String(best);

        // Validation curves: one line per trial, the best drawn last (on top).
        const curveOf = (t) => (t.curve || []).map((v, i) => [i + 1, v]).filter(([, v]) => typeof v === 'number');
        const ordered = [...trials.filter((t) => t.number !== bestNumber), ...trials.filter((t) => t.number === bestNumber)];
        drawChart(
          $('sweep-curves'),
          ordered.map((t) => {
            const points = curveOf(t);
            // A trial stopped after one epoch is a dot.
            return { cls: t.number === bestNumber ? 'trial best' : 'trial', points, dots: points.length === 1, attrs: { 'data-trial': t.number } };
          }),
          { xLabel: 'epoch', percent: share },
        );

        drawParallel($('sweep-parallel'), sweep, sweepFields(sweep));
      });
    },

    async act(action) {
      const buttons = ['sweep-pause', 'sweep-resume', 'sweep-cancel'].map($);
      buttons.forEach((b) => (b.disabled = true));
      try {
        const { body } = await api(`/api/v1/sweeps/${this.id}/${action}`, { method: 'POST' });
        if (body && body.id === this.id) this.sweep = body;
        notice('');
      } catch (error) {
        notice(`${action}: ${error.message}`, true);
      }
      if (this.reader) this.reader.justRead();
      this.render();
    },
  };

  // ---------------------------------------------------------------- compare page

  /** Most runs one comparison draws. */
  const COMPARE_MAX = 8;
  /** A compared run's colour, by its place in the comparison. */
  const PALETTE = ['#2f6fde', '#d97706', '#1f8a4c', '#c53030', '#7c3aed', '#0891b2', '#be185d', '#4d5562'];
  /** The compared runs' views are read again at most this often while events come in. */
  const COMPARE_REFRESH_MS = 500;

  /** A spec as `{dotted.path: value}`: objects are walked, anything else (a list too) is a value. */
  function flatten(value, prefix = '', out = {}) {
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      const keys = Object.keys(value);
      if (!keys.length && prefix) out[prefix] = value;
      for (const key of keys) flatten(value[key], prefix ? `${prefix}.${key}` : key, out);
    } else if (prefix) {
      out[prefix] = value;
    }
    return out;
  }

  /**
   * The dotted paths of `specs` whose values are not all the same (a field one spec
   * lacks differs from any value), sorted, with each spec's flattened fields.
   */
  function specDifferences(specs) {
    const flat = specs.map((spec) => flatten(spec && typeof spec === 'object' ? spec : {}));
    const paths = new Set(flat.flatMap((f) => Object.keys(f)));
    const differ = [...paths].filter((path) => new Set(flat.map((f) => (path in f ? JSON.stringify(f[path]) : ''))).size > 1);
    return { paths: differ.sort(), flat };
  }

  /** A spec value as written: numbers exact (large whole ones grouped), lists and objects as JSON. */
  function specText(v) {
    if (v === undefined) return '–';
    if (typeof v === 'number') return Number.isInteger(v) && Math.abs(v) >= 10000 ? fmt.count(v) : String(v);
    if (typeof v === 'string') return v;
    return JSON.stringify(v);
  }

  /**
   * `#/compare/ID,ID,…`: two or more runs side by side: their loss curves (per sampled
   * batch) overlaid on one chart and their validation curves (per epoch) on another,
   * a legend naming each run in its colour under both, and the fields of their specs
   * that differ, as dotted paths. It follows the runs on the global stream (only
   * theirs): each `EpochEvaluated` adds a validation point, each progress sample a loss
   * point, and a state change reads the runs' views again.
   */
  const comparePage = {
    generation: 0,
    stopped: false,
    ids: [],
    runs: new Map(),
    /** Per run: its loss points `[[step, loss]]`. */
    loss: new Map(),
    /** Per run: epoch → validation metric. */
    val: new Map(),
    stream: null,
    /** Reads the runs' views again after their events (see `throttled`). */
    reader: null,
    drawPending: false,

    async start(ids) {
      const generation = ++this.generation;
      const stale = () => this.stopped || generation !== this.generation;
      if (ids.length > COMPARE_MAX) {
        notice(`comparing the first ${COMPARE_MAX} of the ${ids.length} runs named`);
        ids = ids.slice(0, COMPARE_MAX);
      }
      Object.assign(this, { ids, runs: new Map(), loss: new Map(), val: new Map(), stopped: false });
      if (this.reader) this.reader.stop();
      this.reader = throttled(COMPARE_REFRESH_MS, () => this.readViews(generation));
      $('compare-title').textContent = `Compare ${ids.length} runs`;
      for (const id of ['compare-legend', 'compare-loss', 'compare-val', 'compare-diff-head', 'compare-diff-body']) $(id).replaceChildren();
      for (const id of ['compare-loss-key', 'compare-val-key']) $(id).replaceChildren();
      $('compare-same').hidden = true;
      $('compare-view').hidden = false;
      document.title = 'compare · runyard';
      setLive('connecting');
      let after = 0;
      try {
        const response = await fetch('/readyz', { cache: 'no-store' });
        if (response.ok) after = (await response.json()).last_seq || 0;
      } catch (_) {
        // The stream's retries find the server when it is back.
      }
      if (stale()) return;
      try {
        await Promise.all(ids.map((id) => this.load(id)));
      } catch (error) {
        $('compare-title').textContent = error.status === 404 ? 'a run named is not there' : 'cannot load the runs';
        if (error.status !== 401) notice(error.message, true);
        return;
      }
      if (stale()) return;
      this.render();
      if (this.ids.every((id) => ENDED.has(this.runs.get(id).state))) {
        setLive('ended', 'runs ended');
        return;
      }
      const params = [['every', '1s'], ...ids.map((id) => ['run', id])];
      this.stream = new LiveStream('/api/v1/stream', params, after, {
        event: (event) => this.event(event),
        progress: (sample) => this.progress(sample),
        reopened: () => this.scheduleRefresh(),
      });
      this.stream.open();
    },

    stop() {
      this.stopped = true;
      if (this.stream) this.stream.close();
      this.stream = null;
      if (this.reader) this.reader.stop();
      $('compare-view').hidden = true;
    },

    /** Reads a run, its validation metric per epoch (from its events) and its loss history. */
    async load(id) {
      const run = (await api(`/api/v1/runs/${id}`)).body;
      const [val, history] = await Promise.all([valCurve(id), lossHistory(id)]);
      this.runs.set(id, run);
      this.val.set(id, val);
      this.loss.set(id, history);
    },

    /**
     * Every run ended: the stream is closed, and what it had not brought yet (the
     * views can be ahead of it) is read from the journal and the ticker's history.
     */
    async settle(generation) {
      if (this.stream) this.stream.close();
      this.stream = null;
      setLive('ended', 'runs ended');
      try {
        const curves = await Promise.all(this.ids.map((id) => Promise.all([valCurve(id), lossHistory(id)])));
        if (this.stopped || generation !== this.generation) return;
        this.ids.forEach((id, i) => {
          this.val.set(id, curves[i][0]);
          this.loss.set(id, withLive(curves[i][1], this.loss.get(id) || []));
        });
        this.draw();
      } catch (_) {
        // Shown by api(); the curves stay as the stream left them.
      }
    },

    event(event) {
      if (!this.runs.has(event.run_id)) return;
      const data = event.data || {};
      if (event.type === 'EpochEvaluated') {
        this.val.get(event.run_id).set(data.epoch, data.val_accuracy ?? data.val_mae ?? data.val_metric);
        this.draw();
      }
      // Stopped: the ticker's history holds the points the paced stream left out.
      if (STOPPED_EVENTS.has(event.type)) this.reloadLoss(event.run_id, this.generation);
      if (STATE_EVENTS.has(event.type) || event.type === 'EpochCompleted' || event.type === 'EpochEvaluated') this.scheduleRefresh();
    },

    /** Reads a run's loss history again, keeping live points past its end. */
    async reloadLoss(id, generation) {
      const history = await lossHistory(id);
      if (this.stopped || generation !== this.generation) return;
      this.loss.set(id, withLive(history, this.loss.get(id) || []));
      this.draw();
    },

    /** A live sample of a compared run: a loss point. */
    progress(sample) {
      const points = this.loss.get(sample.run_id);
      if (!points || sample.loss == null || !sample.batches_per_epoch) return;
      const step = (sample.epoch - 1) * sample.batches_per_epoch + sample.batch;
      while (points.length && points[points.length - 1][0] >= step) points.pop();
      points.push([step, sample.loss]);
      if (points.length > MAX_POINTS) this.loss.set(sample.run_id, points.filter((_, i) => i % 2 === 1 || i === points.length - 1));
      this.draw();
    },

    /** Reads the runs' views again soon, at most every COMPARE_REFRESH_MS. */
    scheduleRefresh() {
      if (this.reader) this.reader.soon();
    },

    async readViews(generation) {
      try {
        const views = await Promise.all(this.ids.map((id) => api(`/api/v1/runs/${id}`)));
        if (this.stopped || generation !== this.generation) return false;
        for (const { body } of views) this.runs.set(body.id, body);
        this.render();
        if (this.stream && this.ids.every((id) => ENDED.has(this.runs.get(id).state))) await this.settle(generation);
      } catch (_) {
        // Shown by api(); the next event tries again.
      }
      return false;
    },

    /** The validation chart's metric: `val_accuracy`, `val_mae`, or both when tasks differ. */
    valTitle() {
      const names = new Set(this.ids.map((id) => valName(this.runs.get(id))));
      return [...names].sort().join(' / ');
    },

    /** A legend naming each run in its colour, linking to its page. */
    legend(node) {
      node.replaceChildren(
        ...this.ids.map((id, i) => {
          const run = this.runs.get(id);
          const key = el('span', { class: 'key run' });
          key.style.background = PALETTE[i];
          return el('span', { class: 'run-key', 'data-run-id': id }, key, el('a', { href: `#/runs/${id}` }, run.name));
        }),
      );
    },

    render() {
      const list = $('compare-legend');
      list.replaceChildren(
        ...this.ids.map((id, i) => {
          const run = this.runs.get(id);
          const key = el('span', { class: 'key run' });
          key.style.background = PALETTE[i];
          const val = valOf(run);
          return el(
            'li',
            { 'data-run-id': id },
            key,
            el('a', { href: `#/runs/${id}`, class: 'run-link' }, run.name),
            ' ',
            stateBadge(run.state),
            el(
              'span',
              { class: 'muted' },
              ` · ${fmt.count(run.metrics.epochs_completed)} / ${epochsOf(run) == null ? '?' : fmt.count(epochsOf(run))} epochs` +
                ` · train_loss ${fmt.fixed(run.metrics.train_loss)} · ${valName(run)} ${val == null ? '–' : valText(run, val)}`,
            ),
          );
        }),
      );
      this.legend($('compare-loss-key'));
      this.legend($('compare-val-key'));
      $('compare-val-title').firstChild.textContent = this.valTitle() + ' ';
      this.renderDiff();
      this.draw();
    },

    /** The spec fields that differ: a row per dotted path, a column per run. */
    renderDiff() {
      const specs = this.ids.map((id) => this.runs.get(id).spec);
      const { paths, flat } = specDifferences(specs);
      $('compare-diff-head').replaceChildren(
        el('th', {}, 'field'),
        ...this.ids.map((id, i) => {
          const key = el('span', { class: 'key run' });
          key.style.background = PALETTE[i];
          return el('th', { 'data-run-id': id }, key, this.runs.get(id).name);
        }),
      );
      $('compare-diff-body').replaceChildren(
        ...paths.map((path) =>
          el(
            'tr',
            { 'data-path': path },
            el('td', {}, el('code', {}, path)),
            ...flat.map((f, i) =>
              el('td', { 'data-run-id': this.ids[i], 'data-value': path in f ? JSON.stringify(f[path]) : '' }, specText(f[path])),
            ),
          ),
        ),
      );
      $('compare-diff').hidden = !paths.length;
      $('compare-same').hidden = paths.length > 0;
    },

    draw() {
      if (this.drawPending) return;
      this.drawPending = true;
      requestAnimationFrame(() => {
        this.drawPending = false;
        if (this.stopped) return;
        const line = (points, id, i) => ({ cls: 'run', points, color: PALETTE[i], attrs: { 'data-run-id': id } });
        drawChart(
          $('compare-loss'),
          this.ids.map((id, i) => line(this.loss.get(id) || [], id, i)),
          { xLabel: 'step' },
        );
        const share = this.ids.every((id) => !isRegression(this.runs.get(id)));
        drawChart(
          $('compare-val'),
          this.ids.map((id, i) => {
            const val = this.val.get(id) || new Map();
            const points = [...val.keys()].sort((a, b) => a - b).map((epoch) => [epoch, val.get(epoch)]);
            return { ...line(points, id, i), dots: true };
          }),
          { xLabel: 'epoch', percent: share, yMax: share ? 1 : undefined },
        );
      });
    },
  };

  // ---------------------------------------------------------------- parallel coordinates

  /**
   * One axis of the parallel-coordinates view for a point field: numbers on a linear
   * scale (a log one where they span more than 10×, or the space is `loguniform`),
   * anything else (lists, text) as evenly spaced categories in the space's order.
   * `pos(v)` is 0 (bottom) to 1 (top), or null for a value off the axis.
   */
  function fieldAxis(field, values, entry) {
    const present = values.filter((v) => v !== undefined && v !== null);
    entry = entry && typeof entry === 'object' ? entry : {};
    const listed = Array.isArray(entry.choice) ? entry.choice : Array.isArray(entry.grid) ? entry.grid : null;
    const range = ['uniform', 'loguniform', 'int'].map((k) => entry[k]).find((r) => Array.isArray(r) && r.length === 2);
    const numeric = (v) => typeof v === 'number' && Number.isFinite(v);
    const all = present.concat(listed || [], range || []);
    if (all.length && all.every(numeric)) {
      const lo = Math.min(...all);
      const hi = Math.max(...all);
      if (hi === lo) return { field, scale: 'linear', pos: () => 0.5, ticks: [[0.5, valueText(lo)]] };
      const log = lo > 0 && (hi / lo > 10 || 'loguniform' in entry);
      if (log) {
        const a = Math.log(lo);
        const b = Math.log(hi);
        const ticks = [0, 1, 2, 3, 4].map((i) => [i / 4, fmt.num(Math.exp(a + ((b - a) * i) / 4), 2)]);
        return { field, scale: 'log', pos: (v) => (numeric(v) && v > 0 ? (Math.log(v) - a) / (b - a) : null), ticks };
      }
      const ticks = [0, 1, 2, 3, 4].map((i) => [i / 4, valueText(lo + ((hi - lo) * i) / 4)]);
      return { field, scale: 'linear', pos: (v) => (numeric(v) ? (v - lo) / (hi - lo) : null), ticks };
    }
    const order = [];
    const index = new Map();
    const add = (v) => {
      const key = JSON.stringify(v);
      if (!index.has(key)) {
        index.set(key, order.length);
        order.push(v);
      }
    };
    (listed || []).forEach(add);
    [...present].sort(compareValues).forEach(add);
    const n = order.length;
    const at = (i) => (n === 1 ? 0.5 : i / (n - 1));
    return {
      field,
      scale: 'category',
      pos: (v) => (index.has(JSON.stringify(v)) ? at(index.get(JSON.stringify(v))) : null),
      ticks: order.map((v, i) => [at(i), valueText(v)]),
    };
  }

  /** Mixes two `#rrggbb` colours: `t` 0 gives `from`, 1 gives `to`. */
  function mix(from, to, t) {
    const channel = (hex, i) => parseInt(hex.slice(1 + 2 * i, 3 + 2 * i), 16);
    return (
      '#' +
      [0, 1, 2]
        .map((i) => Math.round(channel(from, i) + (channel(to, i) - channel(from, i)) * t))
        .map((v) => v.toString(16).padStart(2, '0'))
        .join('')
    );
  }

  /**
   * The parallel-coordinates view: an axis per point field and a last one for the
   * metric, one polyline per trial coloured from pale (worse) to dark (better), the
   * best trial on top. The SVG's `data-lines` counts the polylines, `data-axes` the axes.
   */
  function drawParallel(node, sweep, fields) {
    const W = 1000;
    const H = 300;
    const left = 50;
    const right = 80;
    const top = 36;
    const bottom = 16;
    const trials = sweep.trials || [];
    if (!trials.length) {
      node.replaceChildren(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, 'no trials yet'));
      node.dataset.lines = '0';
      node.dataset.axes = '0';
      return;
    }
    const space = (sweep.spec && sweep.spec.space) || {};
    const share = isShare(sweep);
    const axes = fields.map((f) => fieldAxis(f, trials.map((t) => (t.point || {})[f]), space[f]));
    const metrics = trials.map((t) => t.metric).filter((v) => typeof v === 'number' && Number.isFinite(v));
    const mLo = metrics.length ? Math.min(...metrics) : 0;
    const mHi = metrics.length ? Math.max(...metrics) : 1;
    const mPos = (v) => (typeof v !== 'number' || !Number.isFinite(v) ? null : mHi === mLo ? 0.5 : (v - mLo) / (mHi - mLo));
    const mLabel = (v) => (share ? fmt.pct(v) : fmt.num(v, 3));
    axes.push({
      field: sweep.metric || 'metric',
      label: `${sweep.metric || 'metric'} (${sweep.mode})`,
      scale: 'metric',
      pos: mPos,
      ticks: !metrics.length ? [] : mHi === mLo ? [[0.5, mLabel(mLo)]] : [0, 1, 2, 3, 4].map((i) => [i / 4, mLabel(mLo + ((mHi - mLo) * i) / 4)]),
    });
    const xs = axes.map((_, i) => (axes.length === 1 ? W / 2 : left + (i * (W - left - right)) / (axes.length - 1)));
    const y = (p) => top + (1 - p) * (H - top - bottom);
    // How good a trial is, 0 (the worst) to 1 (the best), by the sweep's mode.
    const goodness = (v) => {
      const p = mPos(v);
      if (p === null) return null;
      return sweep.mode === 'min' ? 1 - p : p;
    };
    const bestNumber = sweep.best ? sweep.best.number : null;
    const ordered = [...trials].sort((a, b) => {
      if (a.number === bestNumber || b.number === bestNumber) return a.number === bestNumber ? 1 : -1;
      return (goodness(a.metric) ?? -1) - (goodness(b.metric) ?? -1) || a.number - b.number;
    });
    const parts = [];
    const lines = [];
    for (const trial of ordered) {
      const values = axes.map((axis, i) => (i < fields.length ? (trial.point || {})[fields[i]] : trial.metric));
      const points = [];
      axes.forEach((axis, i) => {
        const p = axis.pos(values[i]);
        if (p !== null && Number.isFinite(p)) points.push(`${xs[i].toFixed(1)},${y(p).toFixed(1)}`);
      });
      const g = goodness(trial.metric);
      const cls = ['pline', 'trial'];
      if (trial.number === bestNumber) cls.push('best');
      if (g === null) cls.push('pending');
      const line = svg('polyline', {
        class: cls.join(' '),
        points: points.join(' '),
        stroke: g === null ? '#c5cbd4' : mix('#c9d3e3', '#16367a', g),
        'data-trial': trial.number,
        'data-metric': trial.metric == null ? '' : String(trial.metric),
      });
      const described = fields.map((f, i) => `${f} ${valueText(values[i])}`).join(' · ');
      line.append(svg('title', {}, `trial ${trial.number} · ${described} · ${sweep.metric} ${metricText(sweep, trial.metric)}`));
      lines.push(line);
    }
    axes.forEach((axis, i) => {
      const x = xs[i];
      const g = svg('g', { class: 'axis-group', 'data-field': axis.field, 'data-scale': axis.scale });
      g.append(svg('line', { class: 'axis', x1: x, x2: x, y1: y(0), y2: y(1) }));
      const anchor = i === 0 ? 'start' : i === axes.length - 1 ? 'end' : 'middle';
      g.append(svg('text', { x, y: 14, 'text-anchor': anchor, class: 'axis-name' }, axis.label || axis.field));
      if (axis.scale === 'log') g.append(svg('text', { x, y: 27, 'text-anchor': anchor, class: 'axis-note' }, 'log'));
      for (const [p, label] of axis.ticks) {
        g.append(svg('line', { class: 'tick', x1: x - 3, x2: x + 3, y1: y(p), y2: y(p) }));
        g.append(svg('text', { x: x + 6, y: y(p) + 4, 'text-anchor': 'start', class: 'tick-label' }, label));
      }
      parts.push(g);
    });
    // Lines under the axes' labels, so the labels stay readable.
    node.replaceChildren(...lines, ...parts);
    node.dataset.lines = String(lines.length);
    node.dataset.axes = String(axes.length);
  }

  // ---------------------------------------------------------------- charts

  /**
   * Draws line series `[{cls, points: [[x, y]], dots, line, attrs, color}]` into an SVG
   * with axes: `line: false` draws the dots alone, `attrs` go on the series' polyline,
   * `color` (when given) strokes its line and fills its dots. The
   * SVG's `data-points` counts the points drawn, `data-series` the lines.
   */
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
      node.dataset.series = '0';
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
        svg('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, options.percent ? fmt.pct(v, 0) : fmt.num(v, 3)),
      );
    }
    // Whole-number ticks (steps, epochs), each once: a short axis has fewer than five.
    const xTicks = new Set();
    for (let i = 0; i <= 4; i++) xTicks.add(Math.round(xMin + ((xMax - xMin) * i) / 4));
    for (const v of xTicks) {
      if (v < xMin || v > xMax) continue;
      parts.push(svg('text', { x: x(v), y: H - bottom + 16, 'text-anchor': 'middle' }, fmt.count(v)));
    }
    parts.push(svg('line', { class: 'axis', x1: left, x2: left, y1: top, y2: H - bottom }));
    parts.push(svg('line', { class: 'axis', x1: left, x2: W - right, y1: H - bottom, y2: H - bottom }));
    parts.push(svg('text', { x: W - right, y: H - 4, 'text-anchor': 'end' }, options.xLabel));
    let drawn = 0;
    let lines = 0;
    for (const s of series) {
      const points = s.points.filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
      if (!points.length) continue;
      drawn += points.length;
      if (s.line !== false) {
        lines += 1;
        parts.push(
          svg('polyline', {
            ...(s.attrs || {}),
            ...(s.color ? { stroke: s.color } : {}),
            class: `series ${s.cls}`,
            points: points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' '),
            'data-points': points.length,
          }),
        );
      }
      if (s.dots && points.length <= (s.line === false ? 2000 : 200)) {
        for (const [a, b] of points) parts.push(svg('circle', { class: s.cls, cx: x(a), cy: y(b), r: 2.5, ...(s.color ? { fill: s.color } : {}) }));
      }
    }
    node.replaceChildren(...parts);
    node.dataset.points = String(drawn);
    node.dataset.series = String(lines);
  }

  // ---------------------------------------------------------------- routing

  let current = null;
  /** Every view; a route shows one of them alone. */
  const VIEWS = ['overview', 'run-view', 'sweep-view', 'compare-view'];
  const UUID = '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}';

  function route() {
    if (current) current.stop();
    // Only the routed view shows: a run's page opened by a link or a reload draws
    // nothing of the overview.
    for (const view of VIEWS) $(view).hidden = true;
    const hash = location.hash;
    const run = hash.match(new RegExp(`^#/runs/(${UUID})$`));
    const sweep = hash.match(new RegExp(`^#/sweeps/(${UUID})$`));
    const compare = hash.match(new RegExp(`^#/compare/(${UUID}(?:,${UUID})+)$`));
    if (run) {
      current = runPage;
      runPage.start(run[1].toLowerCase());
    } else if (sweep) {
      current = sweepPage;
      sweepPage.start(sweep[1].toLowerCase());
    } else if (compare) {
      current = comparePage;
      const ids = [...new Set(compare[1].toLowerCase().split(','))];
      comparePage.start(ids);
    } else {
      document.title = 'runyard';
      current = overview;
      overview.stopped = false;
      const query = hash.match(/^#\/\?(.*)$/);
      overview.start(query ? new URLSearchParams(query[1]) : null);
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
    $('sweep-pause').addEventListener('click', () => sweepPage.act('pause'));
    $('sweep-resume').addEventListener('click', () => sweepPage.act('resume'));
    $('sweep-cancel').addEventListener('click', () => sweepPage.act('cancel'));
    const filters = $('runs-filter');
    filters.addEventListener('submit', (event) => {
      event.preventDefault();
      overview.applyFilters();
    });
    $('filter-state').addEventListener('change', () => overview.applyFilters());
    $('filter-sort').addEventListener('change', () => overview.applyFilters());
    $('filter-state').replaceChildren(
      el('option', { value: '' }, 'any'),
      ...CONFIG.run_states.map((state) => el('option', { value: state }, state)),
    );
    $('filter-sort').replaceChildren(...SORTS.map(([value, label]) => el('option', { value }, label)));
    $('runs-prev').addEventListener('click', () => overview.turn(-1));
    $('runs-next').addEventListener('click', () => overview.turn(1));
    $('compare-open').addEventListener('click', () => overview.compare());
    $('compare-clear').addEventListener('click', () => overview.clearSelection());
    $('logs-stream').addEventListener('change', () => runPage.openLogs());
    $('logs-rank').addEventListener('change', () => runPage.openLogs());
    window.addEventListener('hashchange', route);
    route();
  }

  init();
})();
