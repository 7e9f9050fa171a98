(function () {
  'use strict';
  // The live dispatch map: a Web Mercator canvas renderer for the
  // tenant's fences and vehicles, fed by the GeoJSON and the event stream.
  var cfg = JSON.parse(document.getElementById('geoclock-config').textContent);
  // The signed link (expires, sig) every request of the page carries.
  var signed = new URLSearchParams(cfg.link || '');
  var body = document.body;
  var $ = function (id) { return document.getElementById(id); };

  // ---------------------------------------------------------------- state
  var fences = new Map();    // id -> fence
  var vehicles = new Map();  // id -> vehicle
  var loaded = null;         // {seq, day} of the applied GeoJSON
  var liveDay = null;        // the server's live day (hello/view events)
  var buffered = [];         // events received before the GeoJSON
  var now = 0;               // event time (ms): the newest fix
  var selected = null;       // {kind, id}
  var trail = null;          // [[x, y], ...] of the selected vehicle
  var connections = 0;
  var loading = false;
  var stats = { frames: 0, drawMs: [], gapMs: [], lastFrame: 0, firstRender: null, fixesApplied: 0 };

  // ----------------------------------------------------------- projection
  function mx(lon) { return (lon + 180) / 360; }
  function my(lat) {
    var s = Math.sin(lat * Math.PI / 180);
    s = Math.max(-0.9999, Math.min(0.9999, s));
    return 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI);
  }
  function metresToWorld(m, lat) { return m / (40075016.686 * Math.cos(lat * Math.PI / 180)); }
  var view = { cx: 0.5, cy: 0.5, z: 2 };
  var main = $('map');
  var base = $('base'), top = $('top');
  var bctx = base.getContext('2d'), tctx = top.getContext('2d');
  var W = 0, H = 0, dpr = 1;
  function scale() { return 256 * Math.pow(2, view.z); }
  function sx(x) { return (x - view.cx) * scale() + W / 2; }
  function sy(y) { return (y - view.cy) * scale() + H / 2; }
  function resize() {
    dpr = window.devicePixelRatio || 1;
    W = main.clientWidth; H = main.clientHeight;
    [base, top].forEach(function (c) { c.width = Math.round(W * dpr); c.height = Math.round(H * dpr); });
    dirtyBase = dirtyTop = true; schedule();
  }

  // -------------------------------------------------------------- helpers
  function ms(t) { return t ? Date.parse(t) : 0; }
  var hm = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', timeZone: cfg.timezone });
  function hhmm(t) { return t ? hm.format(new Date(typeof t === 'number' ? t : ms(t))) : ''; }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function withLink(path) {
    var u = new URL(path, location.href);
    signed.forEach(function (v, k) { u.searchParams.set(k, v); });
    return u.toString();
  }
  function stale(v) { return now - v.t > cfg.staleAfterS * 1000; }
  var stateOf = {};
  cfg.states.forEach(function (s) { stateOf[s.key] = s; });

  // ------------------------------------------------------------ features
  function setFence(f) {
    var p = f.properties, ring = f.geometry.coordinates[0];
    var pts = ring.map(function (c) { return [mx(c[0]), my(c[1])]; });
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    pts.forEach(function (q) { x0 = Math.min(x0, q[0]); x1 = Math.max(x1, q[0]); y0 = Math.min(y0, q[1]); y1 = Math.max(y1, q[1]); });
    var c = p.center;
    var fence = {
      id: p.appointment, props: p, pts: pts, box: [x0, y0, x1, y1],
      cx: mx(c[0]), cy: my(c[1]),
      r: p.shape === 'circle' ? metresToWorld(p.radius_m, c[1]) : 0,
      start: ms(p.window_start)
    };
    fences.set(String(p.appointment), fence);
  }
  function setVehicle(f, keepNewerPosition) {
    var p = f.properties, id = String(p.id), old = vehicles.get(id), c = f.geometry.coordinates;
    var t = ms(p.time);
    var v = { id: id, props: p, lon: c[0], lat: c[1], t: t, mph: p.speed_mph, hdg: p.heading_deg,
              x: mx(c[0]), y: my(c[1]), movedAt: Date.now(), drawnAt: 0 };
    if (keepNewerPosition && old && old.t > t) {
      ['lon', 'lat', 't', 'mph', 'hdg', 'x', 'y', 'movedAt', 'drawnAt'].forEach(function (k) { v[k] = old[k]; });
    }
    vehicles.set(id, v);
    now = Math.max(now, v.t);
  }
  function applyFix(a) {
    var id = String(a[0]), v = vehicles.get(id);
    if (!v) {
      v = { id: id, props: { id: id, name: id }, drawnAt: 0 };
      vehicles.set(id, v);
    } else if (v.t >= a[3]) {
      return;
    }
    v.lon = a[1]; v.lat = a[2]; v.x = mx(a[1]); v.y = my(a[2]); v.t = a[3]; v.mph = a[4]; v.hdg = a[5];
    v.movedAt = Date.now(); v.drawnAt = 0;
    now = Math.max(now, v.t);
    stats.fixesApplied++;
  }

  // ------------------------------------------------------------- loading
  function load() {
    if (loading) return;
    loading = true;
    var u = new URL(cfg.base + '/geojson', location.href);
    if (cfg.day) u.searchParams.set('day', cfg.day);
    performance.mark('geoclock-geojson-request');
    fetch(withLink(u.toString()), { cache: 'no-store' }).then(function (r) {
      if (r.status === 503) throw new Error('catching up');
      if (!r.ok) throw new Error('HTTP ' + r.status);
      performance.mark('geoclock-geojson-response');
      return r.json();
    }).then(function (fc) {
      loading = false;
      performance.mark('geoclock-geojson-parsed');
      apply(fc);
      performance.mark('geoclock-geojson-applied');
    }).catch(function (e) {
      loading = false;
      banner('Map not loaded (' + e.message + '); retrying');
      setTimeout(load, 2000);
    });
  }
  function apply(fc) {
    var first = loaded === null;
    fences.clear(); vehicles.clear();
    fc.features.forEach(function (f) {
      if (f.properties.kind === 'fence') setFence(f);
      else if (f.properties.kind === 'vehicle') setVehicle(f, false);
    });
    now = Math.max(now, ms(fc.geoclock.now));
    loaded = { seq: fc.geoclock.seq || 0, day: fc.geoclock.day };
    $('day').textContent = loaded.day;
    banner(null);
    var pending = buffered; buffered = [];
    pending.forEach(function (e) { handle(e.name, e.data); });
    if (first) fit();
    listDirty = true; dirtyBase = dirtyTop = true; schedule(); counts();
  }
  function counts() {
    body.dataset.fences = String(fences.size);
    body.dataset.vehicles = String(vehicles.size);
    body.dataset.seq = String(loaded ? loaded.seq : 0);
  }

  // -------------------------------------------------------------- stream
  var es = null;
  function connect() {
    body.dataset.stream = 'connecting';
    es = new EventSource(withLink(cfg.base + '/events'));
    es.addEventListener('hello', function (e) {
      var d = JSON.parse(e.data);
      connections++;
      body.dataset.connections = String(connections);
      body.dataset.stream = 'open';
      status(true);
      if (d.day) liveDay = d.day;
      // After a reconnect, what was missed is in the GeoJSON.
      buffered = [];
      if (loaded === null || connections > 1) load();
    });
    ['fix', 'view', 'resync'].forEach(function (name) {
      es.addEventListener(name, function (e) {
        var data = JSON.parse(e.data);
        if (loaded === null || loading) buffered.push({ name: name, data: data });
        else handle(name, data);
      });
    });
    es.onerror = function () {
      status(false);
      body.dataset.stream = 'down';
      if (es.readyState === EventSource.CLOSED) { es.close(); setTimeout(connect, 2000); }
    };
  }
  function showsLive() { return loaded && (!liveDay || loaded.day === liveDay); }
  function handle(name, d) {
    if (name === 'resync') { load(); return; }
    if (name === 'fix') {
      if (!showsLive()) return;
      d.fixes.forEach(applyFix);
      dirtyTop = true; schedule(); counts();
      return;
    }
    // view
    liveDay = d.day;
    if (d.seq <= loaded.seq) return;
    if (d.day !== loaded.day) { if (!cfg.day) load(); return; }
    loaded.seq = d.seq;
    if (d.now) now = Math.max(now, ms(d.now));
    d.fences.forEach(setFence);
    d.removed.forEach(function (id) { fences.delete(id.replace(/^fence:/, '')); });
    d.vehicles.forEach(function (f) { setVehicle(f, true); });
    listDirty = true; dirtyBase = dirtyTop = true; schedule(); counts();
    if (selected) showPanel();
  }
  function status(up) {
    var s = $('status');
    s.className = up ? 'live' : 'down';
    s.textContent = up ? 'live' : 'reconnecting';
  }
  function banner(text) {
    var b = $('banner');
    b.hidden = !text;
    b.textContent = text || '';
  }

  // ------------------------------------------------------------ drawing
  var dirtyBase = true, dirtyTop = true, listDirty = true, frame = 0;
  function schedule() { if (!frame) frame = requestAnimationFrame(render); }
  var tiles = new Map(), TILE_CACHE = 512;
  function tile(z, x, y) {
    var key = z + '/' + x + '/' + y, t = tiles.get(key);
    if (t) return t;
    if (tiles.size > TILE_CACHE) tiles.delete(tiles.keys().next().value);
    var img = new Image();
    img.referrerPolicy = 'strict-origin-when-cross-origin';
    t = { img: img, ok: false };
    img.onload = function () { t.ok = true; dirtyBase = true; schedule(); };
    img.onerror = function () { t.failed = true; };
    img.src = cfg.tileUrl.replace('{z}', z).replace('{x}', x).replace('{y}', y);
    tiles.set(key, t);
    return t;
  }
  function drawTiles(ctx) {
    if (!cfg.tileUrl) return;
    var tz = Math.max(0, Math.min(19, Math.round(view.z))), n = Math.pow(2, tz);
    var size = scale() / n;
    var x0 = Math.floor((view.cx - W / 2 / scale()) * n), x1 = Math.floor((view.cx + W / 2 / scale()) * n);
    var y0 = Math.max(0, Math.floor((view.cy - H / 2 / scale()) * n)), y1 = Math.min(n - 1, Math.floor((view.cy + H / 2 / scale()) * n));
    for (var x = x0; x <= x1; x++) {
      for (var y = y0; y <= y1; y++) {
        var t = tile(tz, ((x % n) + n) % n, y);
        if (t.ok) ctx.drawImage(t.img, sx(x / n), sy(y / n), size + 0.5, size + 0.5);
      }
    }
  }
  function inView(box, pad) {
    var s = scale();
    return !(sx(box[2]) < -pad || sx(box[0]) > W + pad || sy(box[3]) < -pad || sy(box[1]) > H + pad) && s > 0;
  }
  var filter = { status: '', tech: '' };
  function fenceShown(f) {
    if (filter.status && f.props.state !== filter.status) return false;
    if (filter.tech && !f.props.techs.some(function (t) { return String(t.id) === filter.tech; })) return false;
    return true;
  }
  // Fences too small to see as shapes are dots, batched into one path per
  // colour (a few fills instead of thousands at low zoom).
  function drawFences(ctx) {
    var s = scale(), drawn = 0, dots = {}, lateDots = new Path2D(), anyLate = false;
    fences.forEach(function (f) {
      if (!fenceShown(f) || !inView(f.box, 10)) return;
      drawn++;
      var color = f.props.color, px = f.r * s, x = sx(f.cx), y = sy(f.cy);
      var shape = f.r ? px >= 3 : (f.box[2] - f.box[0]) * s >= 4;
      var chosen = selected && selected.kind === 'fence' && selected.id === f.id;
      if (!shape && !chosen) {
        var d = dots[color] || (dots[color] = new Path2D());
        d.moveTo(x + 3, y); d.arc(x, y, 3, 0, 2 * Math.PI);
        if (f.props.late) { anyLate = true; lateDots.moveTo(x + 6, y); lateDots.arc(x, y, 6, 0, 2 * Math.PI); }
        return;
      }
      ctx.beginPath();
      if (f.r && px >= 3) {
        ctx.arc(x, y, px, 0, 2 * Math.PI);
      } else if (!f.r && shape) {
        f.pts.forEach(function (q, i) { if (i) ctx.lineTo(sx(q[0]), sy(q[1])); else ctx.moveTo(sx(q[0]), sy(q[1])); });
        ctx.closePath();
      } else {
        ctx.arc(x, y, 3, 0, 2 * Math.PI);
      }
      ctx.globalAlpha = 0.28; ctx.fillStyle = color; ctx.fill();
      ctx.globalAlpha = 1; ctx.lineWidth = 1.5; ctx.strokeStyle = color; ctx.stroke();
      if (f.props.late) {
        ctx.setLineDash([5, 4]); ctx.lineWidth = 3; ctx.strokeStyle = '#b91c1c'; ctx.stroke(); ctx.setLineDash([]);
      }
      if (chosen) { ctx.lineWidth = 4; ctx.strokeStyle = '#0f172a'; ctx.stroke(); }
      if (view.z >= 15) {
        ctx.fillStyle = '#0f172a'; ctx.font = '11px system-ui';
        ctx.fillText(f.props.label, x + Math.max(px, 4) + 3, y);
      }
    });
    Object.keys(dots).forEach(function (color) { ctx.fillStyle = color; ctx.fill(dots[color]); });
    if (anyLate) { ctx.lineWidth = 2; ctx.strokeStyle = '#b91c1c'; ctx.stroke(lateDots); }
    stats.fencesDrawn = drawn;
  }
  var CLUSTER_BELOW = 12, CELL = 44, hits = [];
  function vehicleShown(v) {
    return !filter.tech || String(v.props.tech) === filter.tech;
  }
  function drawMarker(ctx, v, x, y) {
    ctx.globalAlpha = stale(v) ? 0.35 : 1;
    if (v.hdg !== null && v.hdg !== undefined) {
      var a = v.hdg * Math.PI / 180;
      ctx.beginPath();
      ctx.moveTo(x + Math.sin(a) * 12, y - Math.cos(a) * 12);
      ctx.lineTo(x + Math.sin(a + 2.5) * 7, y - Math.cos(a + 2.5) * 7);
      ctx.lineTo(x + Math.sin(a - 2.5) * 7, y - Math.cos(a - 2.5) * 7);
      ctx.closePath();
      ctx.fillStyle = '#0f172a'; ctx.fill();
    }
    ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI);
    ctx.fillStyle = v.props.late ? '#dc2626' : '#0ea5e9'; ctx.fill();
    ctx.lineWidth = 2; ctx.strokeStyle = '#fff'; ctx.stroke();
    if (view.z >= 14) {
      ctx.fillStyle = '#0f172a'; ctx.font = '11px system-ui';
      ctx.fillText(v.props.tech_name || v.props.name || v.id, x + 9, y + 4);
    }
    ctx.globalAlpha = 1;
  }
  function drawVehicles(ctx) {
    hits = [];
    var cells = view.z < CLUSTER_BELOW ? new Map() : null, drawnAt = Date.now(), markers = 0, clusters = 0;
    vehicles.forEach(function (v) {
      if (v.x === undefined || !vehicleShown(v)) return;
      var x = sx(v.x), y = sy(v.y);
      if (x < -20 || x > W + 20 || y < -20 || y > H + 20) return;
      v.drawnAt = v.drawnAt || drawnAt;
      if (cells) {
        var key = Math.floor(x / CELL + 1) * 4096 + Math.floor(y / CELL + 1), c = cells.get(key);
        if (!c) cells.set(key, c = { n: 0, x: 0, y: 0, one: v, late: 0 });
        c.n++; c.x += x; c.y += y; if (v.props.late) c.late++;
      } else {
        drawMarker(ctx, v, x, y); markers++;
        hits.push({ x: x, y: y, v: v });
      }
    });
    if (cells) {
      cells.forEach(function (c) {
        var x = c.x / c.n, y = c.y / c.n;
        if (c.n === 1) { drawMarker(ctx, c.one, x, y); markers++; hits.push({ x: x, y: y, v: c.one }); return; }
        clusters++;
        var r = 10 + Math.min(14, Math.log2(c.n) * 2.5);
        ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
        ctx.fillStyle = c.late ? 'rgba(220,38,38,.85)' : 'rgba(14,165,233,.85)'; ctx.fill();
        ctx.lineWidth = 2; ctx.strokeStyle = '#fff'; ctx.stroke();
        ctx.fillStyle = '#fff'; ctx.font = 'bold 11px system-ui'; ctx.textAlign = 'center';
        ctx.fillText(String(c.n), x, y + 4); ctx.textAlign = 'start';
        hits.push({ x: x, y: y, cluster: c.n, r: r });
      });
    }
    stats.markersDrawn = markers; stats.clustersDrawn = clusters;
  }
  function drawTrail(ctx) {
    if (!trail || trail.length < 2) return;
    ctx.beginPath();
    trail.forEach(function (q, i) { if (i) ctx.lineTo(sx(q[0]), sy(q[1])); else ctx.moveTo(sx(q[0]), sy(q[1])); });
    ctx.lineWidth = 3; ctx.strokeStyle = 'rgba(124,58,237,.8)'; ctx.stroke();
  }
  function render() {
    frame = 0;
    var t0 = performance.now();
    if (dirtyBase) {
      bctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      bctx.fillStyle = '#e8eef3'; bctx.fillRect(0, 0, W, H);
      drawTiles(bctx);
      drawFences(bctx);
      dirtyBase = false;
    }
    if (dirtyTop) {
      tctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      tctx.clearRect(0, 0, W, H);
      drawTrail(tctx);
      drawVehicles(tctx);
      dirtyTop = false;
    }
    if (listDirty) renderList();
    var t1 = performance.now();
    stats.frames++;
    stats.drawMs.push(t1 - t0);
    if (stats.lastFrame) stats.gapMs.push(t0 - stats.lastFrame);
    if (stats.drawMs.length > 5000) { stats.drawMs.shift(); stats.gapMs.shift(); }
    stats.lastFrame = t1;
    if (loaded && stats.firstRender === null) {
      stats.firstRender = t1;
      performance.mark('geoclock-first-render');
      body.dataset.rendered = '1';
    }
  }

  // ---------------------------------------------------------------- list
  var listTimer = 0, lastList = 0;
  function renderList() {
    listDirty = false;
    var wait = 400 - (Date.now() - lastList);
    if (wait > 0) { if (!listTimer) listTimer = setTimeout(function () { listTimer = 0; listDirty = true; schedule(); }, wait); return; }
    lastList = Date.now();
    var order = $('f-sort').value, rows = [];
    fences.forEach(function (f) { if (fenceShown(f)) rows.push(f); });
    var rank = {};
    cfg.states.forEach(function (s, i) { rank[s.key] = i; });
    rows.sort(function (a, b) {
      if (a.props.late !== b.props.late) return a.props.late ? -1 : 1;
      if (order === 'status' && a.props.state !== b.props.state) return rank[a.props.state] - rank[b.props.state];
      return a.start - b.start || String(a.id).localeCompare(String(b.id), undefined, { numeric: true });
    });
    var tbody = document.createElement('tbody');
    rows.forEach(function (f) {
      var p = f.props, tr = document.createElement('tr');
      tr.dataset.id = f.id;
      if (p.late) tr.className = 'late';
      if (selected && selected.kind === 'fence' && selected.id === f.id) tr.className += ' sel';
      var st = el('td'); var dot = el('span', null, 'dot'); dot.style.background = p.color;
      st.appendChild(dot); st.appendChild(document.createTextNode(stateOf[p.state].label));
      if (p.late) { st.appendChild(document.createElement('br')); st.appendChild(el('span', 'running late', 'late-tag')); }
      tr.appendChild(st);
      tr.appendChild(el('td', hhmm(p.window_start) + '\u2013' + hhmm(p.window_end)));
      var who = p.techs.map(function (t) { return t.name || t.id; }).join(', ');
      var what = el('td', p.label);
      what.appendChild(document.createElement('br'));
      what.appendChild(el('small', who + (p.eta ? ' \u00b7 ETA ' + hhmm(p.eta) : '')));
      tr.appendChild(what);
      tbody.appendChild(tr);
    });
    var table = $('list').querySelector('table');
    table.replaceChild(tbody, table.tBodies[0]);
    $('count').textContent = rows.length + ' of ' + fences.size + ' appointments';
    var techs = new Map();
    fences.forEach(function (f) { f.props.techs.forEach(function (t) { if (t.id !== null) techs.set(String(t.id), t.name || String(t.id)); }); });
    var sel = $('f-tech'), keep = sel.value;
    if (sel.options.length !== techs.size + 1) {
      while (sel.options.length > 1) sel.remove(1);
      Array.from(techs).sort(function (a, b) { return a[1].localeCompare(b[1]); }).forEach(function (t) {
        var o = el('option', t[1]); o.value = t[0]; sel.appendChild(o);
      });
      sel.value = keep;
    }
  }

  // --------------------------------------------------------------- panel
  function row(table, cells, head) {
    var tr = document.createElement('tr');
    cells.forEach(function (c) { tr.appendChild(el(head ? 'th' : 'td', c)); });
    table.appendChild(tr);
  }
  function link(parent, href, text) {
    var a = el('a', text); a.href = href; a.target = '_blank'; a.rel = 'noreferrer noopener';
    parent.appendChild(a);
  }
  function showPanel() {
    var panel = $('panel'), content = $('panel-content');
    content.textContent = '';
    if (!selected) { panel.hidden = true; return; }
    panel.hidden = false;
    if (selected.kind === 'fence') {
      var f = fences.get(selected.id);
      if (!f) { panel.hidden = true; return; }
      var p = f.props;
      content.appendChild(el('h2', p.label));
      var st = el('p'); var dot = el('span', null, 'dot'); dot.style.background = p.color;
      st.appendChild(dot); st.appendChild(document.createTextNode(stateOf[p.state].label + (p.state_reason ? ': ' + p.state_reason : '')));
      content.appendChild(st);
      content.appendChild(el('p', 'Window ' + hhmm(p.window_start) + '\u2013' + hhmm(p.window_end) + ' \u00b7 appointment ' + p.status
        + (p.eta ? ' \u00b7 ETA ' + hhmm(p.eta) : '')));
      if (p.late) content.appendChild(el('p', 'Running late: the ETA passes the window\u2019s end.', 'fail'));
      var ul = el('ul'); p.explanation.forEach(function (x) { ul.appendChild(el('li', x)); }); content.appendChild(ul);
      if (p.failures.length) { var fl = el('ul', null, 'fail'); p.failures.forEach(function (x) { fl.appendChild(el('li', x)); }); content.appendChild(fl); }
      var t = el('table'); row(t, ['Technician', 'Vehicle', 'Result', 'En Route in', 'On Site in'], true);
      p.techs.forEach(function (x) {
        row(t, [x.name || x.id || '', x.vehicle || '', x.fence_result.replace(/_/g, ' '), hhmm(x.enroute_clock_in), hhmm(x.onsite_clock_in)]);
      });
      content.appendChild(t);
      var links = el('p', null, 'links');
      link(links, withLink(cfg.report + '?day=' + encodeURIComponent(loaded.day)), 'Activity Report');
      if (p.quick_link) link(links, p.quick_link, 'Job in ServiceTrade');
      content.appendChild(links);
    } else {
      var v = vehicles.get(selected.id);
      if (!v) { panel.hidden = true; return; }
      var q = v.props;
      content.appendChild(el('h2', q.name || v.id));
      content.appendChild(el('p', (q.tech_name ? 'Technician ' + q.tech_name : 'No technician paired') + (q.driver_name ? ' (driver ' + q.driver_name + ')' : '')));
      var age = Math.round((now - v.t) / 60000);
      content.appendChild(el('p', 'Fix ' + hhmm(v.t) + ' (' + age + ' min before the newest)' + (stale(v) ? ', stale' : '')
        + ' \u00b7 ' + (v.mph === null || v.mph === undefined ? '?' : Math.round(v.mph * 1.609)) + ' km/h'
        + (v.hdg === null || v.hdg === undefined ? '' : ' \u00b7 heading ' + Math.round(v.hdg) + '\u00b0')));
      if (q.eta_appointment) {
        content.appendChild(el('p', 'Heading to ' + q.eta_appointment + (q.eta ? ', ETA ' + hhmm(q.eta) : ', no ETA') + (q.late ? ' \u2014 running late' : ''), q.late ? 'fail' : ''));
      }
      content.appendChild(el('p', 'Appointments today:'));
      var list = el('ul');
      fences.forEach(function (f) {
        if (!f.props.techs.some(function (x) { return q.tech !== null && String(x.id) === String(q.tech); })) return;
        var li = el('li'), a = el('a', f.props.label + ' \u00b7 ' + stateOf[f.props.state].label);
        a.href = '#'; a.addEventListener('click', function (e) { e.preventDefault(); select('fence', f.id, true); });
        li.appendChild(a); list.appendChild(li);
      });
      content.appendChild(list);
    }
  }
  function loadTrail(id) {
    var u = new URL(cfg.base + '/geojson', location.href);
    u.searchParams.set('breadcrumbs', id);
    if (loaded) u.searchParams.set('day', loaded.day);
    fetch(withLink(u.toString()), { cache: 'no-store' }).then(function (r) { return r.json(); }).then(function (fc) {
      var t = fc.features.find(function (f) { return f.properties.kind === 'breadcrumb'; });
      if (!selected || selected.id !== id) return;
      var c = t ? (t.geometry.type === 'Point' ? [t.geometry.coordinates] : t.geometry.coordinates) : [];
      trail = c.map(function (p) { return [mx(p[0]), my(p[1])]; });
      body.dataset.trail = String(trail.length);
      dirtyTop = true; schedule();
    }).catch(function () {});
  }
  function select(kind, id, centre) {
    selected = { kind: kind, id: id };
    trail = null;
    if (kind === 'vehicle') loadTrail(id);
    var it = kind === 'fence' ? fences.get(id) : vehicles.get(id);
    if (centre && it) { view.cx = kind === 'fence' ? it.cx : it.x; view.cy = kind === 'fence' ? it.cy : it.y; view.z = Math.max(view.z, 14); }
    showPanel();
    listDirty = dirtyBase = dirtyTop = true; schedule();
  }

  // ---------------------------------------------------------- interaction
  function fit() {
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    var grow = function (x, y) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); };
    fences.forEach(function (f) { grow(f.box[0], f.box[1]); grow(f.box[2], f.box[3]); });
    vehicles.forEach(function (v) { if (v.x !== undefined) grow(v.x, v.y); });
    if (!isFinite(x0)) return;
    view.cx = (x0 + x1) / 2; view.cy = (y0 + y1) / 2;
    var span = Math.max((x1 - x0) / Math.max(W - 40, 1), (y1 - y0) / Math.max(H - 40, 1), 1e-9);
    view.z = Math.max(1, Math.min(17, Math.log2(1 / (256 * span))));
    dirtyBase = dirtyTop = true; schedule();
  }
  function zoomAt(dz, px, py) {
    var wx = view.cx + (px - W / 2) / scale(), wy = view.cy + (py - H / 2) / scale();
    view.z = Math.max(1, Math.min(19, view.z + dz));
    view.cx = wx - (px - W / 2) / scale(); view.cy = wy - (py - H / 2) / scale();
    dirtyBase = dirtyTop = true; schedule();
  }
  var drag = null;
  top.addEventListener('pointerdown', function (e) { drag = { x: e.clientX, y: e.clientY, moved: false }; top.setPointerCapture(e.pointerId); });
  top.addEventListener('pointermove', function (e) {
    if (!drag) return;
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
    view.cx -= dx / scale(); view.cy -= dy / scale();
    drag.x = e.clientX; drag.y = e.clientY;
    dirtyBase = dirtyTop = true; schedule();
  });
  top.addEventListener('pointerup', function (e) {
    var was = drag; drag = null;
    if (!was || was.moved) return;
    var r = top.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
    click(x, y);
  });
  top.addEventListener('wheel', function (e) {
    e.preventDefault();
    var r = top.getBoundingClientRect();
    zoomAt(-e.deltaY * 0.0025, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  top.addEventListener('dblclick', function (e) { var r = top.getBoundingClientRect(); zoomAt(1, e.clientX - r.left, e.clientY - r.top); });
  function click(x, y) {
    var best = null, bd = 14 * 14;
    hits.forEach(function (h) {
      var d = (h.x - x) * (h.x - x) + (h.y - y) * (h.y - y);
      if (d <= Math.max(bd, h.r ? h.r * h.r : 0) && (!best || d < best.d)) best = { h: h, d: d };
    });
    if (best && best.h.cluster) { zoomAt(2, best.h.x, best.h.y); return; }
    if (best) { select('vehicle', best.h.v.id, false); return; }
    var wx = view.cx + (x - W / 2) / scale(), wy = view.cy + (y - H / 2) / scale(), found = null;
    fences.forEach(function (f) {
      if (!fenceShown(f) || wx < f.box[0] || wx > f.box[2] || wy < f.box[1] || wy > f.box[3]) return;
      var inside = false;
      for (var i = 0, j = f.pts.length - 1; i < f.pts.length; j = i++) {
        var a = f.pts[i], b = f.pts[j];
        if ((a[1] > wy) !== (b[1] > wy) && wx < (b[0] - a[0]) * (wy - a[1]) / (b[1] - a[1]) + a[0]) inside = !inside;
      }
      if (inside) found = f;
    });
    if (found) select('fence', found.id, false);
    else { selected = null; trail = null; showPanel(); listDirty = dirtyBase = dirtyTop = true; schedule(); }
  }
  $('zoom-in').addEventListener('click', function () { zoomAt(1, W / 2, H / 2); });
  $('zoom-out').addEventListener('click', function () { zoomAt(-1, W / 2, H / 2); });
  $('zoom-fit').addEventListener('click', fit);
  $('panel-close').addEventListener('click', function () { selected = null; trail = null; showPanel(); dirtyBase = dirtyTop = listDirty = true; schedule(); });
  $('list').addEventListener('click', function (e) {
    var tr = e.target.closest('tr');
    if (tr && tr.dataset.id) select('fence', tr.dataset.id, true);
  });
  ['f-status', 'f-tech', 'f-sort'].forEach(function (id) {
    $(id).addEventListener('change', function () {
      filter.status = $('f-status').value; filter.tech = $('f-tech').value;
      lastList = 0; listDirty = dirtyBase = dirtyTop = true; schedule();
    });
  });
  cfg.states.forEach(function (s) {
    var o = el('option', s.label); o.value = s.key; $('f-status').appendChild(o);
    var item = el('span'); var dot = el('span', null, 'dot'); dot.style.background = s.color;
    item.appendChild(dot); item.appendChild(document.createTextNode(s.label + '  '));
    $('legend').appendChild(item);
  });
  if (cfg.tileUrl) $('attribution').textContent = cfg.attribution; else $('attribution').hidden = true;
  $('report-link').href = withLink(cfg.report + (cfg.day ? '?day=' + cfg.day : ''));
  window.addEventListener('resize', resize);

  // For tests and benchmarks: the layers as drawn.
  window.geoclockMap = {
    counts: function () { return { fences: fences.size, vehicles: vehicles.size, seq: loaded ? loaded.seq : 0, day: loaded ? loaded.day : null }; },
    vehicle: function (id) {
      var v = vehicles.get(String(id));
      return v ? { lat: v.lat, lon: v.lon, t: v.t, stale: stale(v), movedAt: v.movedAt, drawnAt: v.drawnAt, late: !!v.props.late, tech: v.props.tech_name || null } : null;
    },
    fence: function (id) {
      var f = fences.get(String(id));
      return f ? { state: f.props.state, color: f.props.color, late: f.props.late, eta: f.props.eta } : null;
    },
    fenceIds: function () { return Array.from(fences.keys()); },
    vehicleIds: function () { return Array.from(vehicles.keys()); },
    select: select,
    setView: function (lat, lon, z) { view.cx = mx(lon); view.cy = my(lat); view.z = z; dirtyBase = dirtyTop = true; schedule(); },
    panBy: function (dx, dy) { view.cx += dx / scale(); view.cy += dy / scale(); dirtyBase = dirtyTop = true; schedule(); },
    stats: stats,
    resetStats: function () { stats.drawMs = []; stats.gapMs = []; stats.frames = 0; stats.fixesApplied = 0; stats.lastFrame = 0; }
  };
  body.dataset.connections = '0';
  resize();
  connect();
})();
