//! `GET /`: a small live dashboard. One static page that polls `/metrics` and `/upstreams`
//! (same origin, same token) and shows requests/s, errors and latency per route.

use axum::response::Html;

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Gatehouse</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin-bottom:2rem}td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4}.bad{color:#b00}.muted{color:#888}
</style></head><body>
<h1>Gatehouse</h1>
<p class="muted">config <span id="version">…</span> · refreshed every 2 s · token: <input id="tok" size="20" placeholder="admin token (if set)"></p>
<h2>Routes</h2>
<table><thead><tr><th>route</th><th>req/s</th><th>errors/s (5xx)</th><th>mean latency</th></tr></thead><tbody id="routes"></tbody></table>
<h2>Upstreams</h2>
<table><thead><tr><th>upstream</th><th>target</th><th>weight</th><th>in flight</th><th>health</th></tr></thead><tbody id="ups"></tbody></table>
<script>
let prev = null, prevT = 0;
function hdrs(){const t=document.getElementById('tok').value;return t?{Authorization:'Bearer '+t}:{}}
function parse(text){
  const m={};
  for(const line of text.split('\n')){
    if(line.startsWith('#')||!line.trim())continue;
    const r=line.match(/^([a-z_]+)\{(.*)\}\s+([0-9.eE+-]+)/);if(!r)continue;
    const labels={};for(const kv of r[2].matchAll(/([a-z_]+)="([^"]*)"/g))labels[kv[1]]=kv[2];
    (m[r[1]]=m[r[1]]||[]).push({labels,v:parseFloat(r[3])});
  }
  return m;
}
function byRoute(m){
  const out={};
  for(const s of (m.gatehouse_requests_total||[])){const o=out[s.labels.route]=out[s.labels.route]||{n:0,e:0,sum:0,cnt:0};o.n+=s.v;if(s.labels.status_class==='5xx')o.e+=s.v}
  for(const s of (m.gatehouse_request_duration_seconds_sum||[])){const o=out[s.labels.route]=out[s.labels.route]||{n:0,e:0,sum:0,cnt:0};o.sum=s.v}
  for(const s of (m.gatehouse_request_duration_seconds_count||[])){const o=out[s.labels.route]=out[s.labels.route]||{n:0,e:0,sum:0,cnt:0};o.cnt=s.v}
  return out;
}
async function tick(){
  try{
    const [mt,ups,cfg]=await Promise.all([fetch('metrics',{headers:hdrs()}).then(r=>r.text()),fetch('upstreams',{headers:hdrs()}).then(r=>r.json()),fetch('config',{headers:hdrs()}).then(r=>r.json())]);
    document.getElementById('version').textContent=cfg.version;
    const now=Date.now()/1000,cur=byRoute(parse(mt));
    const rows=[];
    for(const [route,c] of Object.entries(cur)){
      const p=prev&&prev[route],dt=now-prevT;
      const rps=p?((c.n-p.n)/dt).toFixed(1):'…',eps=p?((c.e-p.e)/dt).toFixed(1):'…';
      const lat=p&&c.cnt>p.cnt?((c.sum-p.sum)/(c.cnt-p.cnt)*1000).toFixed(1)+' ms':'–';
      rows.push(`<tr><td>${route||'<i>unrouted</i>'}</td><td>${rps}</td><td class="${eps>0?'bad':''}">${eps}</td><td>${lat}</td></tr>`);
    }
    document.getElementById('routes').innerHTML=rows.join('');
    prev=cur;prevT=now;
    document.getElementById('ups').innerHTML=ups.upstreams.flatMap(u=>u.targets.map(t=>`<tr><td>${u.name}</td><td>${t.url}</td><td>${t.weight}</td><td>${t.in_flight}</td><td>${t.health}</td></tr>`)).join('');
  }catch(e){document.getElementById('version').textContent='unreachable: '+e}
}
tick();setInterval(tick,2000);
</script></body></html>"#;
