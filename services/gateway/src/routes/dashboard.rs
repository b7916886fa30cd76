//! `/dashboard`: a self-contained page (no CDN) with the portfolio table and each
//! company's funnel, updating live from the funnel event streams. The page holds no
//! data; it reads the API with the key the user gives it (kept in this tab only).
//! Amounts carry their currency from the API (the portfolio's totals are in its reporting
//! currency); the velocity of a funnel is shown only from enough won deals and a cycle of
//! at least a day (otherwise it is noise).

use super::AppState;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(page))
}

/// The live funnel dashboard (HTML). Give it an API key in the page, or as
/// `/dashboard#key=…` (a fragment never reaches the server or its logs).
#[utoipa::path(get, path = "/dashboard", operation_id = "getDashboard", tag = "funnels", security(()),
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GoMark · live funnels</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
:root{--ink:#1d2430;--mute:#667085;--line:#e4e7ec;--open:#3b6fd8;--won:#12a150;--lost:#d0455b}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:var(--ink);background:#f7f8fa}
header{display:flex;flex-wrap:wrap;gap:.6rem 1rem;align-items:center;padding:.8rem 1.4rem;background:#fff;border-bottom:1px solid var(--line)}
header h1{font-size:1.1rem;margin:0;flex:1 1 16rem} #status{color:var(--mute)} #status.live{color:var(--won)} #currency{color:var(--mute)}
main{display:grid;grid-template-columns:minmax(0,1.4fr) minmax(0,1fr);gap:1.2rem;padding:1.2rem 1.4rem}
@media (max-width:1100px){main{grid-template-columns:minmax(0,1fr);padding:1rem}}

section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:1rem;min-width:0}
h2{font-size:1rem;margin:0 0 .6rem} .table-wrap{overflow-x:auto} table{width:100%;border-collapse:collapse}
th,td{padding:.35rem .5rem;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left} tbody tr{cursor:pointer} tbody tr:hover,tr.sel{background:#eef3fd}
.mini{display:flex;height:10px;width:120px;border-radius:3px;overflow:hidden;background:#f0f1f4}
.bar{display:flex;align-items:center;gap:.6rem;margin:.35rem 0} .bar .name{flex:0 0 8rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar .track{flex:1 1 auto;min-width:3rem;background:#f0f1f4;border-radius:3px;height:18px} .bar .fill{height:18px;border-radius:3px;transition:width .4s}
.bar .num{flex:0 0 auto;min-width:7rem;text-align:right;color:var(--mute);white-space:nowrap} .flash{animation:fl 1s} @keyframes fl{from{background:#fff3b0}to{background:transparent}}
#stages .bar .name{flex-basis:6rem} input{font:inherit;padding:.3rem .5rem;width:22rem;max-width:100%} button,select{font:inherit;padding:.3rem .8rem}
.kpi{display:flex;flex-wrap:wrap;gap:.6rem 1.4rem;margin:.2rem 0 .8rem}.kpi div{color:var(--mute)}.kpi b{display:block;color:var(--ink);font-size:1.15rem}
.funnel-head{display:flex;flex-wrap:wrap;gap:.6rem;align-items:baseline;justify-content:space-between}
</style></head><body>
<header><h1>GoMark · live sales funnels</h1>
<span id="currency"></span>
<input id="key" type="password" placeholder="API key (gmk_…)" autocomplete="off"><button id="connect">Connect</button>
<span id="status">not connected</span></header>
<main>
<section><h2>Portfolio <span id="count" style="color:var(--mute);font-weight:400"></span></h2>
<div class="kpi"><div>Open deals<b id="total-open-count">–</b></div><div class="amount-label">Open amount<b id="total-open-amount">–</b></div>
<div class="amount-label">Weighted forecast<b id="total-forecast">–</b></div><div class="amount-label">Won amount<b id="total-won-amount">–</b></div><div>Win rate<b id="total-win-rate">–</b></div></div>
<div id="stages"></div>
<div class="table-wrap"><table><thead><tr><th>Company</th><th>Open deals</th><th>Open amount</th><th>Forecast</th><th>Won deals</th><th>Won amount</th><th>Lost deals</th><th>Win rate</th><th>Stages</th></tr></thead>
<tbody id="companies"></tbody></table></div></section>
<section><div class="funnel-head"><h2 id="funnel-title">Select a company</h2>
<label>Pipeline <select id="pipeline" aria-label="Pipeline" disabled><option value="default">Sales Pipeline</option></select></label></div>
<div class="kpi" id="funnel-kpi"></div><div id="funnel"></div></section>
</main>
<script>
"use strict";
const money=m=>{if(!m)return'–';try{return new Intl.NumberFormat(undefined,{style:'currency',currency:m.currency,maximumFractionDigits:0}).format(Number(m.amount))}catch(_){return`${m.amount} ${m.currency}`}};
const num=m=>m?Number(m.amount):0;
// A funnel's currency: that of any of its amounts (one company reports in one currency).
const cur=f=>(f.weightedForecast||f.wonAmount||f.salesVelocityPerDay||{}).currency||'';
const pct=n=>(n*100).toFixed(0)+'%';
// Velocity divides by the average cycle: below a day, or from a handful of won deals, it
// is noise (a deal won the day it was created gives billions per day), so it is not shown.
const MIN_CYCLE_DAYS=1, MIN_WON_DEALS=3;
const velocity=f=>f.avgCycleDays>=MIN_CYCLE_DAYS&&f.wonCount>=MIN_WON_DEALS&&f.salesVelocityPerDay?money(f.salesVelocityPerDay):'—';
const color=k=>k==='won'?'var(--won)':k==='lost'?'var(--lost)':'var(--open)';
let key='', portfolioAbort=null, funnelAbort=null, selected=null;
function el(tag,attrs,...kids){const e=document.createElement(tag);for(const[k,v]of Object.entries(attrs||{}))e.setAttribute(k,v);for(const c of kids)e.append(c);return e}
function setText(id,text){const e=document.getElementById(id);if(e.textContent!==text){e.textContent=text;e.classList.remove('flash');void e.offsetWidth;e.classList.add('flash')}}
// Server-sent events over fetch, so the key travels in the Authorization header.
async function stream(url,name,onData,abort){
  const res=await fetch(url,{headers:{Authorization:'Bearer '+key,Accept:'text/event-stream'},signal:abort.signal});
  if(!res.ok){const p=await res.json().catch(()=>({}));throw new Error(p.detail||res.statusText)}
  const reader=res.body.getReader(),dec=new TextDecoder();let buf='';
  for(;;){const{value,done}=await reader.read();if(done)break;buf+=dec.decode(value,{stream:true});
    let i;while((i=buf.indexOf('\n\n'))>=0){const chunk=buf.slice(0,i);buf=buf.slice(i+2);
      let ev='message',data='';for(const line of chunk.split('\n')){if(line.startsWith('event:'))ev=line.slice(6).trim();else if(line.startsWith('data:'))data+=line.slice(5).trim()}
      if(ev===name&&data)onData(JSON.parse(data))}}
}
function bars(container,rows,max){container.textContent='';for(const r of rows){const w=max>0?Math.max(1,100*r.value/max):0;
  container.append(el('div',{class:'bar','data-stage':r.id},el('span',{class:'name',title:r.label},r.label),
   el('span',{class:'track'},el('span',{class:'fill',style:`display:block;width:${w}%;background:${color(r.kind)}`})),el('span',{class:'num'},r.text)))}}
function renderPortfolio(p){
  setText('count',`${p.companyCount} companies`);const t=p.totals;
  setText('currency',`Totals in ${p.reportingCurrency}`);
  for(const d of document.querySelectorAll('.amount-label')){d.dataset.label??=d.firstChild.textContent;d.firstChild.textContent=`${d.dataset.label} (${p.reportingCurrency})`}
  setText('total-open-count',String(t.openCount));setText('total-open-amount',money(t.openAmount));
  setText('total-forecast',money(t.weightedForecast));setText('total-won-amount',money(t.wonAmount));setText('total-win-rate',pct(t.winRate));
  const max=Math.max(...t.stages.map(s=>num(s.amount)),0);
  bars(document.getElementById('stages'),t.stages.map(s=>({id:s.stageId,label:s.label,kind:s.kind,value:num(s.amount),text:`${s.dealCount} · ${money(s.amount)}`})),max);
  const body=document.getElementById('companies');
  for(const c of p.items){let row=body.querySelector(`tr[data-company="${CSS.escape(c.companyId)}"]`);
    if(!row){row=el('tr',{'data-company':c.companyId});for(const cls of['name','open-count','open-amount','forecast','won','won-amount','lost','win-rate','mini'])row.append(el('td',{class:cls}));
      row.onclick=()=>select(c.companyId,c.companyName||c.companyId);body.append(row)}
    const cell=(cls,text)=>{const td=row.querySelector('.'+cls);if(td.textContent!==text){td.textContent=text;td.classList.remove('flash');void td.offsetWidth;td.classList.add('flash')}};
    cell('name',(c.companyName||c.companyId)+(c.fxRateMissing?' (no exchange rate: not in totals)':''));cell('open-count',String(c.openCount));cell('open-amount',money(c.openAmount));
    cell('forecast',money(c.weightedForecast));cell('won',String(c.wonCount));cell('won-amount',money(c.wonAmount));cell('lost',String(c.lostCount));cell('win-rate',pct(c.winRate));
    const total=c.stages.reduce((a,s)=>a+s.dealCount,0),mini=el('div',{class:'mini'});
    for(const s of c.stages)if(s.dealCount>0)mini.append(el('span',{title:`${s.label}: ${s.dealCount}`,style:`width:${100*s.dealCount/total}%;background:${color(s.kind)};opacity:${s.kind==='open'?0.45+s.dealCount/total:1}`}));
    const m=row.querySelector('.mini');m.textContent='';m.append(mini)}
}
function renderFunnel(f){
  document.getElementById('funnel-title').textContent=`${selected.name} · ${f.pipelineLabel||f.pipelineId}`;
  const k=document.getElementById('funnel-kpi');k.textContent='';
  for(const[id,label,v,title]of[['funnel-open','Open deals',String(f.openCount)],['funnel-forecast',`Forecast (${cur(f)})`,money(f.weightedForecast)],
      ['funnel-won-count','Won deals',String(f.wonCount)],['funnel-won-amount',`Won amount (${cur(f)})`,money(f.wonAmount)],['funnel-win-rate','Win rate',pct(f.winRate)],
      ['funnel-velocity',`Velocity/day (${cur(f)})`,velocity(f),`shown from ${MIN_WON_DEALS} won deals and an average cycle of at least ${MIN_CYCLE_DAYS} day`]])
    k.append(el('div',title?{title}:{},label,el('b',{id},v)));
  const max=Math.max(...f.stages.map(s=>s.dealCount),0);
  bars(document.getElementById('funnel'),f.stages.map(s=>({id:s.stageId,label:s.label,kind:s.kind,value:s.dealCount,
    text:`${s.dealCount} · ${money(s.amount)}`+(s.conversionToNext!=null?` · →${pct(s.conversionToNext)}`:'')})),max);
}
function watchFunnel(){
  if(funnelAbort)funnelAbort.abort();funnelAbort=new AbortController();
  const pipeline=document.getElementById('pipeline').value||'default';
  stream(`/v1/companies/${encodeURIComponent(selected.id)}/funnels/${encodeURIComponent(pipeline)}/events`,'funnel',renderFunnel,funnelAbort).catch(e=>{if(e.name!=='AbortError')status('error: '+e.message)})}
// The company's pipelines fill the picker; the default pipeline is shown first.
async function loadPipelines(id){
  const picker=document.getElementById('pipeline');
  try{const res=await fetch(`/v1/companies/${encodeURIComponent(id)}/pipelines`,{headers:{Authorization:'Bearer '+key}});
    if(!res.ok)return;const page=await res.json();if(!selected||selected.id!==id)return;
    const current=picker.value;picker.textContent='';
    for(const p of page.items||[])picker.append(el('option',{value:p.pipelineId},`${p.label||p.pipelineId} (${p.dealCount})`));
    if(!picker.options.length)picker.append(el('option',{value:'default'},'default'));
    picker.value=[...picker.options].some(o=>o.value===current)?current:([...picker.options].some(o=>o.value==='default')?'default':picker.options[0].value);
    picker.disabled=false}
  catch(e){status('error: '+e.message)}
}
async function select(id,name){selected={id,name};document.querySelectorAll('#companies tr').forEach(r=>r.classList.toggle('sel',r.dataset.company===id));
  await loadPipelines(id);if(selected&&selected.id===id)watchFunnel()}
document.getElementById('pipeline').onchange=()=>{if(selected)watchFunnel()};
function status(text,live){const s=document.getElementById('status');s.textContent=text;s.className=live?'live':''}
async function connect(){
  key=document.getElementById('key').value.trim();if(!key)return status('enter an API key');sessionStorage.setItem('gomark-key',key);
  if(portfolioAbort)portfolioAbort.abort();portfolioAbort=new AbortController();status('connecting…');
  let first=true;
  for(let attempt=0;attempt<100;attempt++){
    try{await stream('/v1/portfolio/funnel/events?limit=500','portfolio',p=>{renderPortfolio(p);status('live',true);
        if(first&&p.items.length&&!selected){first=false;select(p.items[0].companyId,p.items[0].companyName)}},portfolioAbort)}
    catch(e){if(e.name==='AbortError')return;status('error: '+e.message);if(/key|auth|401/i.test(e.message))return}
    await new Promise(r=>setTimeout(r,2000));status('reconnecting…')}
}
document.getElementById('connect').onclick=connect;
const fromHash=new URLSearchParams(location.hash.slice(1)).get('key');
if(fromHash){history.replaceState(null,'',location.pathname)}
const saved=fromHash||sessionStorage.getItem('gomark-key');
if(saved){document.getElementById('key').value=saved;connect()}
</script></body></html>
"##;
