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
// Styles go through the CSSOM: the page's policy refuses inline style attributes.
function el(tag,attrs,...kids){const e=document.createElement(tag);for(const[k,v]of Object.entries(attrs||{})){if(k==='style')e.style.cssText=v;else e.setAttribute(k,v)}for(const c of kids)e.append(c);return e}
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
  await loadPipelines(id);if(selected&&selected.id===id){watchFunnel();refreshCharts()}}
document.getElementById('pipeline').onchange=()=>{if(selected){watchFunnel();refreshCharts()}};
function status(text,live){const s=document.getElementById('status');s.textContent=text;s.className=live?'live':''}
async function connect(){
  key=document.getElementById('key').value.trim();if(!key)return status('enter an API key');sessionStorage.setItem('gomark-key',key);
  if(portfolioAbort)portfolioAbort.abort();portfolioAbort=new AbortController();status('connecting…');
  startConsole();
  let first=true;
  for(let attempt=0;attempt<100;attempt++){
    try{await stream('/v1/portfolio/funnel/events?limit=500','portfolio',p=>{renderPortfolio(p);status('live',true);rememberCompanies(p.items);
        if(first&&p.items.length&&!selected){first=false;select(p.items[0].companyId,p.items[0].companyName)}},portfolioAbort)}
    catch(e){if(e.name==='AbortError')return;status('error: '+e.message);if(/key|auth|401/i.test(e.message))return}
    await new Promise(r=>setTimeout(r,2000));status('reconnecting…')}
}
// ---- Shared: JSON reads with the key, company names, dates ------------------------------
async function api(url){
  const res=await fetch(url,{headers:{Authorization:'Bearer '+key}});
  if(!res.ok){const p=await res.json().catch(()=>({}));throw new Error(p.detail||res.statusText)}
  return res.json()
}
const companies=new Map();
function rememberCompanies(items){
  const picker=document.getElementById('audit-company'),known=companies.size;
  for(const c of items)if(!companies.has(c.companyId)){companies.set(c.companyId,c.companyName||c.companyId);picker.append(el('option',{value:c.companyId},c.companyName||c.companyId))}
  if(known===0&&companies.size>0){refreshCharts();loadBenchmarks().catch(e=>status('benchmarks: '+e.message))}
}
const DAY_MS=86400000;
const isoDay=d=>d.toISOString().slice(0,10);
const when=t=>t?new Date(t).toLocaleString():'–';
// Two date inputs as instants: the first day's start to the last day's end, never after now.
function range(fromId,toId){
  const from=new Date(document.getElementById(fromId).value+'T00:00:00Z');
  let to=new Date(new Date(document.getElementById(toId).value+'T00:00:00Z').getTime()+DAY_MS);
  if(to>new Date())to=new Date();
  return isNaN(from)||isNaN(to)||to<=from?null:{from,to}
}
function initDates(){
  const today=new Date();
  document.getElementById('trend-from').value=isoDay(new Date(today-13*DAY_MS));document.getElementById('trend-to').value=isoDay(today);
  document.getElementById('wf-from').value=isoDay(new Date(today-7*DAY_MS));document.getElementById('wf-to').value=isoDay(today);
}
// A chart as wide as its box, following the window.
function fit(u,box){new ResizeObserver(()=>u.setSize({width:box.clientWidth,height:u.height})).observe(box)}
const charts={trend:null,waterfall:null};
window.gomarkCharts=charts;
function refreshCharts(){if(!key)return;loadTrend().catch(e=>status('trends: '+e.message));loadWaterfall().catch(e=>status('waterfall: '+e.message))}

// ---- Trends: deals created/won/lost per period, with revisions and rollouts as markers ----
let markers=[];
async function loadMarkers(){
  const [revisions,rollouts]=await Promise.all([api('/v1/config/revisions?limit=200'),api('/v1/rollouts?limit=200')]);
  markers=[...(revisions.items||[]).map(r=>({kind:'revision',revision:r.number,t:Date.parse(r.createdAt)/1000,label:`r${r.number}`,title:r.message})),
           ...(rollouts.items||[]).map(r=>({kind:'rollout',revision:r.revision,t:Date.parse(r.createdAt)/1000,label:`▶ r${r.revision}`,title:`rollout ${r.id} (${r.state})`})),
           ...(rollouts.items||[]).filter(r=>r.finishedAt).map(r=>({kind:'rollout-end',revision:r.revision,t:Date.parse(r.finishedAt)/1000,label:`■ r${r.revision}`,title:`rollout ${r.id} ${r.state}`}))]
    .filter(m=>!isNaN(m.t)).sort((a,b)=>a.t-b.t)
}
// The portfolio's series, summed by the API over every company's default pipeline (counts
// only: amounts are in each company's currency).
const portfolioPeriods=q=>api(`/v1/portfolio/periods?${q}`).then(p=>p.items||[]);
async function loadTrend(){
  const r=range('trend-from','trend-to');if(!r)return;
  const period=document.getElementById('trend-period').value,portfolio=document.getElementById('trend-of').value==='portfolio';
  if(!portfolio&&!selected)return;
  const q=new URLSearchParams({period,from:r.from.toISOString(),to:r.to.toISOString()});
  const pipeline=document.getElementById('pipeline').value||'default';
  const [rows]=await Promise.all([portfolio?portfolioPeriods(q):api(`/v1/companies/${encodeURIComponent(selected.id)}/funnels/${encodeURIComponent(pipeline)}/periods?${q}`).then(p=>p.items||[]),loadMarkers()]);
  document.getElementById('trend-scope').textContent=portfolio?`· portfolio, ${companies.size} companies, deals per ${period}`:`· ${selected.name}, ${pipeline}, deals per ${period}`;
  const data=[rows.map(p=>Date.parse(p.start)/1000),rows.map(p=>p.created),rows.map(p=>p.won),rows.map(p=>p.lost)];
  const shown=markers.filter(m=>m.t>=r.from/1000&&m.t<=r.to/1000);
  const list=document.getElementById('markers');list.textContent='';
  for(const m of shown)list.append(el('li',{'data-kind':m.kind,'data-revision':String(m.revision),title:m.title},`${m.label} · ${when(m.t*1000)}${m.kind==='revision'&&m.title?' · '+m.title:''}`));
  const box=document.getElementById('trend-chart');
  if(charts.trend)charts.trend.destroy();
  const line=(label,stroke)=>({label,stroke,width:2,points:{show:true,size:5}});
  charts.trend=new uPlot({width:box.clientWidth,height:260,
    scales:{x:{time:true,range:()=>[r.from/1000,r.to/1000]},y:{range:(u,min,max)=>[0,Math.max(1,max*1.15)]}},
    series:[{},line('Created','#3b6fd8'),line('Won','#12a150'),line('Lost','#d0455b')],
    axes:[{},{label:'deals'}],
    hooks:{draw:[u=>drawMarkers(u,shown)]}},data,box);
  fit(charts.trend,box)
}
// Dashed vertical lines at each revision and rollout, labelled, staggered when close.
function drawMarkers(u,shown){
  const ctx=u.ctx,{left,top,width,height}=u.bbox,drawn=[];ctx.save();ctx.font=`${Math.round(11*devicePixelRatio)}px system-ui,sans-serif`;ctx.setLineDash([4*devicePixelRatio,3*devicePixelRatio]);
  shown.forEach((m,i)=>{const x=u.valToPos(m.t,'x',true);if(x<left||x>left+width)return;
    const c=m.kind==='rollout'?'#e8772e':m.kind==='rollout-end'?'#12a150':'#98a2b3';ctx.strokeStyle=c;ctx.fillStyle=c;ctx.lineWidth=devicePixelRatio;
    ctx.beginPath();ctx.moveTo(x,top);ctx.lineTo(x,top+height);ctx.stroke();
    ctx.fillText(m.label,x+3*devicePixelRatio,top+(12+12*(i%4))*devicePixelRatio);drawn.push(m.label)});
  ctx.restore();u.drawnMarkers=drawn
}
for(const id of['trend-of','trend-period','trend-from','trend-to'])document.getElementById(id).onchange=()=>loadTrend().catch(e=>status('trends: '+e.message));

// ---- Waterfall: what moved the open pipeline between two dates ----------------------------
async function loadWaterfall(){
  const r=range('wf-from','wf-to');if(!r||!selected)return;
  const pipeline=document.getElementById('pipeline').value||'default';
  const q=new URLSearchParams({from:r.from.toISOString(),to:r.to.toISOString()});
  const w=await api(`/v1/companies/${encodeURIComponent(selected.id)}/funnels/${encodeURIComponent(pipeline)}/waterfall?${q}`);
  document.getElementById('waterfall-scope').textContent=`· ${selected.name}, ${pipeline}, open deals`;
  // [label, movement, effect on the open total]; pulled in/pushed out leave it unchanged.
  const steps=[['Start',w.start,'total'],['Created',w.created,1],['Reopened',w.reopened,1],['Won',w.won,-1],['Lost',w.lost,-1],
    ['Removed',w.removed,-1],['End',w.end,'total'],['Pulled in',w.pulledIn,0],['Pushed out',w.pushedOut,0],['Amount changes',w.amountChanges,0]];
  let run=0;const bars=steps.map(([label,m,effect])=>{const n=(m&&m.count)||0;let lo=0,hi=n;
    if(effect==='total')run=n;else if(effect===1){lo=run;hi=run+n;run=hi}else if(effect===-1){hi=run;lo=run-n;run=lo}
    return{label,count:n,amount:m&&m.amount,effect,lo,hi,deals:(m&&m.deals)||[],truncated:!!(m&&m.dealsTruncated)}});
  const box=document.getElementById('waterfall-chart');
  if(charts.waterfall)charts.waterfall.destroy();
  const xs=bars.map((_,i)=>i);
  charts.waterfall=new uPlot({width:box.clientWidth,height:240,legend:{show:false},cursor:{points:{show:false},y:false,drag:{x:false,y:false}},
    scales:{x:{time:false,range:()=>[-0.5,bars.length-0.5]},y:{range:(u,min,max)=>[Math.min(0,...bars.map(b=>b.lo)),Math.max(1,...bars.map(b=>b.hi))*1.2]}},
    series:[{},{label:'deals',paths:()=>null,points:{show:false}}],
    axes:[{splits:()=>xs,values:(u,splits)=>splits.map(i=>bars[i]?bars[i].label:''),size:40},{label:'open deals'}],
    hooks:{draw:[u=>drawBars(u,bars)]}},[xs,bars.map(b=>b.hi)],box);
  charts.waterfall.bars=bars;charts.waterfall.range={from:w.from,to:w.to,pipeline};
  // Capture: uPlot's own click listener stops the event after what it takes for a drag.
  const chart=charts.waterfall;
  chart.over.addEventListener('click',e=>{const x=e.clientX-chart.over.getBoundingClientRect().left,b=bars[Math.round(chart.posToVal(x,'x'))];if(!b)return;
    const amount=b.amount?` · ${money(b.amount)}`:'';
    document.getElementById('waterfall-detail').textContent=`${b.label}: ${b.count} deal${b.count===1?'':'s'}${amount} between ${when(w.from)} and ${when(w.to)}`;
    showBarDeals(b)},true);
  showBarDeals(null);
  if(w.amountChanged)document.getElementById('waterfall-detail').textContent=`Amount changes of deals open throughout: ${money(w.amountChanged)}. Click a bar for its deals.`;
  fit(charts.waterfall,box)
}
// A deal at one of the two dates: stage, amount, close date; "–" when not in the pipeline.
const dealState=s=>s?`${s.stageId} · ${money(s.amount)}${s.closeDate?' · closes '+new Date(s.closeDate).toLocaleDateString():''}`:'–';
// The clicked bar's deals (the API lists the largest first, up to its limit), or none.
function showBarDeals(b){
  const table=document.getElementById('waterfall-deals'),body=table.querySelector('tbody'),more=document.getElementById('waterfall-more');
  body.textContent='';more.textContent='';table.hidden=!b||!b.deals.length;if(!b)return;table.dataset.bar=b.label;
  for(const d of b.deals)body.append(el('tr',{'data-deal':d.dealId},el('td',{title:d.dealId,class:'name'},d.name||`deal ${d.dealId}`),
    el('td',{class:'amount'},money(d.amount)),el('td',{},dealState(d.before)),el('td',{},dealState(d.after))));
  if(b.truncated)more.textContent=`The ${b.deals.length} largest of ${b.count} deals shown.`
}
function drawBars(u,bars){
  const ctx=u.ctx,dpr=devicePixelRatio;ctx.save();ctx.font=`${Math.round(11*dpr)}px system-ui,sans-serif`;ctx.textAlign='center';
  bars.forEach((b,i)=>{const x0=u.valToPos(i-0.34,'x',true),x1=u.valToPos(i+0.34,'x',true),y0=u.valToPos(b.lo,'y',true),y1=u.valToPos(b.hi,'y',true);
    ctx.fillStyle=b.effect==='total'?'#3b6fd8':b.effect===1?'#7aa2ea':b.effect===-1?(b.label==='Won'?'#12a150':'#d0455b'):'#98a2b3';
    ctx.fillRect(x0,y1,x1-x0,Math.max(dpr,y0-y1));ctx.fillStyle='#1d2430';ctx.fillText(String(b.count),(x0+x1)/2,y1-4*dpr)});
  ctx.restore()
}
for(const id of['wf-from','wf-to'])document.getElementById(id).onchange=()=>loadWaterfall().catch(e=>status('waterfall: '+e.message));

// ---- Benchmarks: each company against the portfolio's percentiles, one metric at a time ---
// How each metric is shown, and its definition in words (from /v1/metrics/definitions).
const windowText=d=>d===undefined?'all of history':`the last ${d} days`;
const BENCH={
  winRate:{label:'win rate',fmt:pct,def:d=>`Win rate = won ÷ (won + lost), deals closed in ${windowText(d.winRateWindowDays)}; won stages ${d.winRateWonStages.join(', ')}, lost stages ${d.winRateLostStages.join(', ')}`},
  salesCycle:{label:'sales cycle',fmt:v=>`${v.toFixed(1)} days`,def:d=>`Sales cycle = days from created to won, deals won in ${windowText(d.salesCycleWindowDays)}`},
  coverage:{label:'coverage',fmt:v=>`${v.toFixed(2)}×`,def:()=>`Coverage = open amount ÷ the company's coverageTarget`},
  slip:{label:'slip',fmt:pct,def:d=>`Slip = share of open deals whose close date moved later in ${windowText(d.slipWindowDays)}`}};
async function loadBenchmarks(){
  const metric=document.getElementById('bench-metric').value,groupBy=document.getElementById('bench-group').value.trim();
  const q=new URLSearchParams({metric});if(groupBy)q.set('groupBy',groupBy);
  const [b,d]=await Promise.all([api(`/v1/portfolio/benchmarks?${q}`),api('/v1/metrics/definitions')]);
  const m=BENCH[metric],groups=((b.metrics||[]).find(x=>x.metric===metric)||{groups:[]}).groups;
  // Every figure names its definition and the revision that computed it (the benchmark's,
  // which may be older than the definitions in force right after a new revision).
  const rev=b.definitionRevision,def=`${m.def(d)}. Minimum sample: ${d.minDeals} deals behind a company's figure, ${d.minCompanies} companies behind percentiles.`;
  const title=`${def} Definition revision r${rev}${rev!==d.revision?` (r${d.revision} now in force)`:''}.`;
  const p=document.getElementById('bench-definition');p.textContent=`${def} Computed with definition revision r${rev}.`;p.dataset.revision=String(rev);
  document.getElementById('bench-scope').textContent=`· ${m.label}${groupBy?`, grouped by ${groupBy}`:''}, definitions r${rev}`;
  // One scale for the metric across groups, so bands compare; ratios start at 0.
  const xs=groups.flatMap(g=>[g.p25,g.p75,...g.companies.map(c=>c.value&&c.value.value)]).filter(v=>typeof v==='number');
  const lo=Math.min(0,...xs),hi=Math.max(lo+1e-9,...xs,metric==='winRate'||metric==='slip'?1:0),at=v=>`${(100*(v-lo)/(hi-lo)).toFixed(2)}%`;
  const body=document.getElementById('bench-rows');body.textContent='';
  for(const g of groups){const band=el('span',{class:'band-track'});
    if(g.notEnoughData)band.append(el('span',{class:'ned'},'not enough data'));
    else band.append(el('span',{class:'band',title:`p25 ${m.fmt(g.p25)} – p75 ${m.fmt(g.p75)}`,style:`left:${at(g.p25)};width:calc(${at(g.p75)} - ${at(g.p25)})`}),
      el('span',{class:'p50',title:`p50 ${m.fmt(g.p50)}`,style:`left:${at(g.p50)}`}));
    for(const c of g.companies){const v=c.value,enough=v&&!v.notEnoughData&&typeof v.value==='number';
      const cell=el('td',{class:'value'},el('a',{href:'#bench-definition',title:`${title} ${v?v.sampleSize:0} deals.`},enough?m.fmt(v.value):'not enough data'));
      if(!enough)cell.classList.add('ned');
      const track=band.cloneNode(true);if(enough)track.append(el('span',{class:'marker',title:`${c.companyName||c.companyId}: ${m.fmt(v.value)}`,style:`left:${at(v.value)}`}));
      body.append(el('tr',{'data-company':c.companyId,'data-group':g.tagValue,'data-enough':String(!!enough)},el('td',{},c.companyName||c.companyId),
        el('td',{},g.tagValue||(groupBy?'(no tag)':'portfolio')),cell,el('td',{},typeof c.percentileRank==='number'?String(Math.round(c.percentileRank)):'–'),
        el('td',{class:'band-cell'},track)))}}
  if(!body.children.length)body.append(el('tr',{},el('td',{colspan:'5',class:'mute'},'no companies')))
}
for(const id of['bench-metric','bench-group'])document.getElementById(id).onchange=()=>loadBenchmarks().catch(e=>status('benchmarks: '+e.message));

// ---- Operator console: rollouts (polled while the page is open), drift, audit -------------
let consoleTimer=null,rolloutsSeen='';
function startConsole(){if(consoleTimer)clearInterval(consoleTimer);let tick=0;
  const run=()=>{loadRollouts().catch(e=>status('rollouts: '+e.message));
    if(tick%15===14)loadBenchmarks().catch(e=>status('benchmarks: '+e.message));
    if(tick++%5===0){loadDrift().catch(e=>status('drift: '+e.message));loadAudit().catch(e=>status('audit: '+e.message))}};
  run();consoleTimer=setInterval(run,2000)}
async function loadRollouts(){
  const page=await api('/v1/rollouts?limit=20'),body=document.getElementById('rollouts'),items=page.items||[];
  body.textContent='';
  for(const r of items){const done=r.total?100*r.done/r.total:0,failed=r.total?100*r.failed/r.total:0;
    const bar=el('span',{class:'progress'},el('span',{style:`width:${done}%`}),el('span',{class:'failed',style:`width:${failed}%`}));
    body.append(el('tr',{'data-rollout':r.id,'data-state':r.state},el('td',{title:r.id},r.id.slice(0,8)),el('td',{},'r'+r.revision),
      el('td',{class:'state',title:r.reason||''},r.state),el('td',{class:'progress-cell'},bar,el('span',{class:'done'},`${r.done}/${r.total}`),r.failed?` · ${r.failed} failed`:'',r.waiting?` · ${r.waiting} waiting`:''),
      el('td',{},when(r.createdAt))))}
  if(!items.length)body.append(el('tr',{},el('td',{colspan:'5',class:'mute'},'no rollouts yet')));
  // A new rollout, or one that changed state, is a new marker on the trend: redraw it.
  const seen=items.map(r=>r.id+r.state).join();if(seen!==rolloutsSeen){const first=!rolloutsSeen;rolloutsSeen=seen;if(!first)loadTrend().catch(()=>{})}
}
const json=v=>v===null||v===undefined?'∅':typeof v==='string'?v:JSON.stringify(v);
function actionDiff(a){const d=el('div',{class:'diff'},`${a.op} ${a.targetKind} ${a.target}${a.blocked?' (blocked: '+a.blocked+')':''}`);
  for(const c of a.changes||[])d.append('\n  ',`${c.field}: `,el('span',{class:'before'},json(c.before)),' → ',el('span',{class:'after'},json(c.after)));return d}
async function loadDrift(){
  const page=await api('/v1/drift?limit=20'),box=document.getElementById('drift'),items=page.items||[];
  const open=new Set([...box.querySelectorAll('details[open]')].map(d=>d.dataset.drift));box.textContent='';
  for(const d of items){const who=d.source?` · by ${d.source.kind} (${d.source.changeSource})`:'';
    const det=el('details',{'data-drift':d.id},el('summary',{},`${when(d.detectedAt)} · ${companies.get(d.companyId)||d.companyId} · r${d.revision} · ${d.policy} · ${d.resolution||'unresolved'}${who}`));
    if(open.has(d.id))det.open=true;for(const a of d.actions||[])det.append(actionDiff(a));box.append(det)}
  if(!items.length)box.append(el('p',{class:'mute'},'no drift found'))
}
// The API filters by company, actor and action (exact, e.g. `rollout.start`).
async function loadAudit(){
  const company=document.getElementById('audit-company').value,actor=document.getElementById('audit-actor').value.trim(),action=document.getElementById('audit-action').value.trim();
  const q=new URLSearchParams({limit:'100'});if(actor)q.set('actor',actor);if(action)q.set('action',action);
  const page=await api(company?`/v1/companies/${encodeURIComponent(company)}/audit?${q}`:`/v1/audit?${q}`);
  const body=document.getElementById('audit');body.textContent='';
  const items=page.items||[];
  for(const e of items){const change=el('details',{},el('summary',{},e.before&&e.after?'changed':e.after?'created':'removed'),
      el('div',{class:'diff'},el('span',{class:'before'},'before: '+json(e.before)),'\n',el('span',{class:'after'},'after: '+json(e.after))));
    body.append(el('tr',{'data-action':e.action},el('td',{},when(e.at)),el('td',{},e.actor),el('td',{},e.action),el('td',{},e.resource),el('td',{class:'change'},change)))}
  if(!items.length)body.append(el('tr',{},el('td',{colspan:'5',class:'mute'},'no entries')))
}
document.getElementById('audit-apply').onclick=()=>loadAudit().catch(e=>status('audit: '+e.message));
initDates();
document.getElementById('connect').onclick=connect;
const fromHash=new URLSearchParams(location.hash.slice(1)).get('key');
if(fromHash){history.replaceState(null,'',location.pathname)}
const saved=fromHash||sessionStorage.getItem('gomark-key');
if(saved){document.getElementById('key').value=saved;connect()}
