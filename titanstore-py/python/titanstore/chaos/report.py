"""The report folder of a chaos run.

* ``history.jsonl``: one operation a line, the field names porcupine's and
  Knossos's users know (``process``, ``f``, ``key``, ``value``, ``call_ns``,
  ``return_ns``, ``outcome``); times in ns since the run began, ``return_ns``
  null when unknown; non-UTF-8 strings as ``{"b64": ...}``.
* ``faults.jsonl``: one applied fault a line (``at_ns``, ``kind``,
  ``targets``, ``leader_before``, ``ended_ns``, ...).
* ``summary.json``: the verdict, counts, coverage and the replay command;
  ``replay.sh`` runs that command.
* ``logs/``: every node's log (copied by the runner).
* ``report.html``: one self-contained page (no network): per-client
  timeline with fault bands, latency scatter with p50/p99, throughput,
  coverage, and the counterexample highlighted and listed.
"""

from __future__ import annotations

import base64
import json
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .history import Operation

if TYPE_CHECKING:
    from .runner import RunResult

__all__ = ["write_report", "MAX_MARKS"]

#: At most this many operations are drawn (a seeded sample beyond that); the
#: counterexample's operations are always among them.
MAX_MARKS = 20_000

#: A JSON value (``json.dumps`` checks the rest).
_Json = Any


def _text(data: Optional[bytes]) -> _Json:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode("ascii")}


def _ns(seconds: float) -> Optional[int]:
    return None if math.isinf(seconds) else int(round(seconds * 1e9))


def history_record(op: Operation) -> Dict[str, _Json]:
    """One line of ``history.jsonl``."""
    record: Dict[str, _Json] = {
        "process": op.process,
        "f": op.kind,
        "key": _text(op.key),
        "value": _text(op.value),
        "call_ns": _ns(op.call),
        "return_ns": _ns(op.ret) if op.outcome != "unknown" else None,
        "outcome": op.outcome,
    }
    if op.kind in ("cas", "cas-conflict"):
        # A compare-and-set: what it compared against, and whether it swapped.
        record["f"] = "cas"
        record["expected"] = _text(op.expected)
        record["swapped"] = op.kind == "cas"
    if op.error:
        record["error"] = op.error
    return record


def summary(result: "RunResult") -> Dict[str, _Json]:
    """``summary.json``."""
    check = result.check
    return {
        "seed": result.seed,
        "command": result.command,
        "nodes": result.nodes,
        "duration_s": result.duration_s,
        "clients": result.clients,
        "keys": result.keys,
        "reads": result.reads,
        "fault_kinds": list(result.fault_kinds),
        "not_supported_here": dict(result.unsupported),
        "ops": dict(result.ops),
        "faults": dict(result.faults),
        "faults_skipped": dict(result.skipped_faults),
        "skip_reasons": {k: v for k, v in result.skip_reasons.items() if k in result.skipped_faults},
        "coverage": dict(result.coverage),
        "required": list(result.required),
        "missing_coverage": result.missing_coverage,
        "linearizable": result.linearizable,
        "verdict": result.verdict,
        "checked": check.checked if check is not None else 0,
        "check_seconds": check.elapsed if check is not None else 0.0,
        "explanation": check.explanation if check is not None else "",
        "counterexample": [history_record(op) for op in result.counterexample],
        "lost_writes": len(result.lost_writes),
        "lost_write_ops": [history_record(op) for op in result.lost_writes],
        "divergent_keys": {k: dict(v) for k, v in result.divergent_keys.items()},
        "converged": result.converged,
        "errors": list(result.errors),
        "passed": result.passed,
        "exit_code": result.exit_code,
    }


def write_report(result: "RunResult", folder: Path) -> Path:
    """Writes the report folder (created if needed); returns ``report.html``."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "history.jsonl", "w") as out:
        for op in result.operations:
            out.write(json.dumps(history_record(op)) + "\n")
    with open(folder / "faults.jsonl", "w") as out:
        for fault in result.applied_faults:
            record = {
                "at_ns": _ns(fault.at),
                "kind": fault.kind,
                "targets": list(fault.targets),
                "leader_before": fault.leader_before,
                "ended_ns": _ns(fault.ended) if fault.ended is not None else None,
                "detail": fault.detail,
                "verified": fault.verified,
                "overlapping": fault.overlapping,
                "leader_on_minority": fault.leader_on_minority,
            }
            out.write(json.dumps(record) + "\n")
    data = summary(result)
    (folder / "summary.json").write_text(json.dumps(data, indent=2) + "\n")
    (folder / "replay.sh").write_text(f"#!/bin/sh\n# Replays chaos run seed {result.seed}.\nexec {result.command}\n")
    page = folder / "report.html"
    page.write_text(render_html(result, data))
    return page


def _page_data(result: "RunResult", data: Dict[str, _Json]) -> Dict[str, _Json]:
    ops = result.operations
    counter = set(result.check.ops) if result.check is not None and not result.check.ok else set()
    lost = {(op.process, op.call) for op in result.lost_writes}
    chosen = list(range(len(ops)))
    if len(chosen) > MAX_MARKS:
        keep = sorted(counter)
        rest = [i for i in chosen if i not in counter]
        chosen = sorted(keep + random.Random(result.seed).sample(rest, MAX_MARKS - len(keep)))
    processes = sorted({op.process for op in ops}, key=lambda p: (not p.startswith("p"), len(p), p))
    lane = {p: i for i, p in enumerate(processes)}
    end = max([result.elapsed_s] + [op.ret for op in ops if not math.isinf(op.ret)] + [0.0])

    def _mark(i: int) -> _Json:
        op = ops[i]
        return [
            lane[op.process],
            op.kind,
            op.key.decode("utf-8", "backslashreplace"),
            None if op.value is None else op.value.decode("utf-8", "backslashreplace")[:40],
            round(op.call, 6),
            None if math.isinf(op.ret) else round(op.ret, 6),
            op.outcome,
            1 if i in counter else (2 if (op.process, op.call) in lost else 0),
            i,
            (op.error or "")[:120],
        ]

    marks: List[_Json] = [_mark(i) for i in chosen]
    faults: List[_Json] = [
        [f.kind, round(f.at, 6), round(f.ended if f.ended is not None else end, 6), ",".join(f.targets),
         f.leader_before or "-", f.detail, f.verified]
        for f in result.applied_faults
    ]  # fmt: skip
    zoom: Dict[str, _Json] = {"marks": []}
    if counter:
        involved = [ops[i] for i in counter]
        key = involved[0].key
        finite = [o.ret for o in involved if not math.isinf(o.ret)]
        t0 = min(o.call for o in involved)
        t1 = max(finite + [t0])
        pad = max((t1 - t0) * 0.3, 0.002)
        t0, t1 = t0 - pad, t1 + pad
        near = [
            i for i, o in enumerate(ops)
            if o.key == key and o.call <= t1 and (math.isinf(o.ret) or o.ret >= t0)
        ][:400]  # fmt: skip
        zoom = {"from": round(t0, 6), "to": round(t1, 6), "marks": [_mark(i) for i in near]}
    return {
        "zoom": zoom,
        "summary": data,
        "processes": list(processes),
        "marks": marks,
        "total_ops": len(ops),
        "faults": faults,
        "end": round(end, 6),
        "coverage": [[name, result.coverage.get(name, 0), name in result.required] for name in result.coverage],
    }


def render_html(result: "RunResult", data: Dict[str, _Json]) -> str:
    """The self-contained ``report.html``."""
    payload = json.dumps(_page_data(result, data)).replace("</", "<\\/")
    title = f"TitanStore chaos run, seed {result.seed}: {'PASSED' if result.passed else 'FAILED'}"
    return _TEMPLATE.replace("__TITLE__", title).replace("__DATA__", payload)


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px 24px;color:#1d2330;background:#fafbfc}
h1{font-size:20px;margin:0 0 4px} h2{font-size:15px;margin:22px 0 6px}
.banner{padding:10px 14px;border-radius:6px;font-weight:600;margin:8px 0}
.pass{background:#e3f5e8;border:1px solid #4caf6a}.fail{background:#fde7e7;border:1px solid #d64545}
.unproven{background:#fff4dc;border:1px solid #e0a020}
code{background:#eef0f3;padding:1px 4px;border-radius:3px;font-size:12px;word-break:break-all}
table{border-collapse:collapse;margin:4px 0}td,th{border:1px solid #d5d9e0;padding:3px 8px;text-align:left}
th{background:#eef0f3}.zero{background:#fde7e7;font-weight:600}.num{text-align:right}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px;border-radius:2px}
svg{background:#fff;border:1px solid #d5d9e0;border-radius:4px;display:block}
#tip{position:fixed;pointer-events:none;background:#1d2330;color:#fff;padding:4px 8px;border-radius:4px;font-size:12px;display:none;max-width:520px;z-index:9}
.cx td{background:#fff0f6}
#status{color:#888;font-size:11px}
</style></head><body>
<div id="status" data-state="loading">loading</div>
<h1 id="title"></h1><div id="banner"></div><div id="facts"></div>
<h2>Timeline of operations per client, faults shaded</h2>
<div class="legend" id="legend"></div><div id="timeline"></div>
<h2>Latency over time (ms, log scale) with rolling p50 and p99</h2><div id="latency"></div>
<h2>Throughput (operations completed per second)</h2><div id="throughput"></div>
<h2>Coverage (counted from the run)</h2><div id="coverage"></div>
<h2 id="cxh">Counterexample</h2><div id="counterexample"></div>
<h2 id="zoomh">The counterexample's key around the violation (every operation on it)</h2><div id="zoom"></div>
<h2>Faults applied</h2><div id="faults"></div>
<div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
var errors=[];
window.addEventListener("error",function(e){errors.push(String(e.message));setStatus();});
function setStatus(extra){var s=document.getElementById("status");
 if(errors.length){s.dataset.state="error";s.textContent="script errors: "+errors.join("; ");}
 else if(extra){s.dataset.state="rendered";s.textContent=extra;} }
var D=JSON.parse(document.getElementById("data").textContent),S=D.summary;
var COL={ok:"#2e9d4a",fail:"#d64545",unknown:"#e0a020"};
var FCOL={"kill":"#7b61ff","kill-leader":"#5a3fd6","pause":"#1f9bd1","partition":"#e8663d","bridge":"#c2477a",
 "isolate-leader":"#d63d3d","slow-net":"#8c9a2b","power-loss":"#333","transfer":"#2aa198",
 "add-node":"#3a8f3a","remove-node":"#8f5a3a"};
var NS="http://www.w3.org/2000/svg";
function el(tag,attrs,parent){var e=document.createElementNS(NS,tag);for(var k in attrs)e.setAttribute(k,attrs[k]);if(parent)parent.appendChild(e);return e;}
function h(tag,html,parent){var e=document.createElement(tag);if(html!==undefined)e.innerHTML=html;if(parent)parent.appendChild(e);return e;}
function esc(s){return String(s).replace(/[&<>"]/g,function(c){return{"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c];});}
var tip=document.getElementById("tip");
function hover(node,text){node.addEventListener("mousemove",function(e){tip.style.display="block";tip.textContent=text;tip.style.left=(e.clientX+12)+"px";tip.style.top=(e.clientY+12)+"px";});
 node.addEventListener("mouseleave",function(){tip.style.display="none";});}
var W=Math.max(900,Math.min(1600,window.innerWidth-60)),L=90,R=20,END=Math.max(D.end,0.001);
function X(t){return L+(W-L-R)*t/END;}
function axis(svg,y0,y1){var step=END>120?30:END>40?10:END>12?2:1;
 for(var t=0;t<=END+1e-9;t+=step){el("line",{x1:X(t),x2:X(t),y1:y0,y2:y1,stroke:"#eceef2"},svg);var tx=el("text",{x:X(t),y:y1+12,"font-size":10,"text-anchor":"middle",fill:"#666"},svg);tx.textContent=t+"s";}}
function bands(svg,y0,y1,labels){D.faults.forEach(function(f,i){var x0=X(f[1]),x1=Math.max(X(f[2]),x0+2);
 var r=el("rect",{x:x0,y:y0,width:x1-x0,height:y1-y0,fill:FCOL[f[0]]||"#999","fill-opacity":0.10},svg);
 hover(r,f[0]+" "+f[3]+" (leader before: "+f[4]+") "+f[1].toFixed(2)+"-"+f[2].toFixed(2)+"s "+f[5]);
 if(labels){var row=i%4;var b=el("rect",{x:x0,y:4+row*11,width:x1-x0,height:9,fill:FCOL[f[0]]||"#999","fill-opacity":0.8,rx:2,"class":"fault"},svg);
  hover(b,f[0]+" "+f[3]+" (leader before: "+f[4]+") "+f[1].toFixed(2)+"-"+f[2].toFixed(2)+"s "+f[5]+(f[6]?"":" NOT VERIFIED"));}});}
function header(){var passed=S.passed,cls=passed?"pass":(S.exit_code==1?"fail":"unproven");
 document.getElementById("title").textContent="TitanStore chaos run, seed "+S.seed;
 var lin=S.linearizable===true?"linearizable":(S.linearizable===false?"NOT linearizable":"linearizability unknown (checker budget)");
 var text=(passed?"PASSED: ":(S.exit_code==1?"ANOMALY FOUND: ":"NOT PROVEN: "))+lin+"; "+S.lost_writes+" lost acknowledged writes; "+
  (S.converged?"converged":"did NOT converge")+(S.missing_coverage.length?"; coverage missing: "+S.missing_coverage.join(", "):"");
 h("div",esc(text),document.getElementById("banner")).className="banner "+cls;
 var f=document.getElementById("facts");
 h("div","<b>"+S.nodes+"</b> nodes, <b>"+S.clients+"</b> clients, <b>"+S.keys+"</b> keys, <b>"+S.duration_s+
  " s</b>, reads <b>"+esc(S.reads)+"</b>; operations: <b>"+S.ops.ok+"</b> ok, <b>"+S.ops.fail+"</b> fail, <b>"+S.ops.unknown+
  "</b> unknown ("+S.checked+" checked in "+Number(S.check_seconds).toFixed(2)+" s); faults applied: "+
  esc(Object.keys(S.faults).sort().map(function(k){return k+" "+S.faults[k];}).join(", ")||"none"),f);
 h("div","replay: <code>"+esc(S.command)+"</code>",f);
 if(D.marks.length<D.total_ops)h("div","drawn: a seeded sample of "+D.marks.length+" of "+D.total_ops+" operations (the counterexample always included)",f);
 var lg=document.getElementById("legend");
 [["ok",COL.ok],["fail (not applied)",COL.fail],["unknown (may have applied)",COL.unknown]].forEach(function(p){h("span",'<i class="sw" style="background:'+p[1]+'"></i>'+p[0],lg);});
 h("span",'<i class="sw" style="background:#fff;border:2px solid #c0006a"></i>counterexample',lg);
 Object.keys(FCOL).forEach(function(k){if(S.fault_kinds.indexOf(k)>=0)h("span",'<i class="sw" style="background:'+FCOL[k]+';opacity:.6"></i>'+k,lg);});}
function timeline(){var lanes=D.processes.length,LH=16,top=50,H=top+lanes*LH+24;
 var svg=el("svg",{width:W,height:H,id:"timeline-svg"});document.getElementById("timeline").appendChild(svg);
 bands(svg,top-4,top+lanes*LH,true);axis(svg,top-4,top+lanes*LH);
 D.processes.forEach(function(p,i){var t=el("text",{x:L-6,y:top+i*LH+11,"font-size":11,"text-anchor":"end",fill:"#333"},svg);t.textContent=p;});
 var drawn=0;D.marks.forEach(function(m){var x0=X(m[4]),x1=m[5]===null?X(END):X(m[5]);var y=top+m[0]*LH+2;
  if(m[5]===null){el("line",{x1:x0,x2:x1,y1:y+(LH-5)/2,y2:y+(LH-5)/2,stroke:COL.unknown,"stroke-width":1,"stroke-dasharray":"3 3"},svg);x1=Math.min(x1,X(m[4]+1));}
  var r=el("rect",{x:x0,y:y,width:Math.max(x1-x0,1.5),height:LH-5,fill:COL[m[6]],"fill-opacity":0.85,"class":"op"},svg);
  if(m[7]==1){r.setAttribute("stroke","#c0006a");r.setAttribute("stroke-width",2.5);r.setAttribute("class","op cx");}
  if(m[7]==2){r.setAttribute("stroke","#000");r.setAttribute("stroke-width",2);}
  hover(r,"#"+m[8]+" "+D.processes[m[0]]+" "+m[1]+"("+m[2]+(m[1]=="write"?", "+m[3]:"")+")"+(m[1]=="read"&&m[6]=="ok"?" -> "+m[3]:"")+" "+m[6]+
   " ["+m[4].toFixed(4)+", "+(m[5]===null?"?":m[5].toFixed(4))+"]"+(m[9]?" "+m[9]:""));drawn++;});
 var cx=D.marks.filter(function(m){return m[7]==1;});
 cx.forEach(function(m){var x=X(m[4]),y=top+m[0]*LH+2;el("path",{d:"M"+x+" "+(y-6)+" l4 5 l-8 0 z",fill:"#c0006a"},svg);});
 return drawn;}
function zoom(){var box=document.getElementById("zoom");var Z=D.zoom;if(!Z||!Z.marks.length){box.style.display="none";document.getElementById("zoomh").style.display="none";return 0;}
 var procs=[];Z.marks.forEach(function(m){if(procs.indexOf(m[0])<0)procs.push(m[0]);});procs.sort(function(a,b){return a-b;});
 var LH=22,top=8,H=top+procs.length*LH+24,t0=Z.from,t1=Z.to;function ZX(t){return L+(W-L-R)*(Math.min(Math.max(t,t0),t1)-t0)/(t1-t0);}
 var svg=el("svg",{width:W,height:H,id:"zoom-svg"});box.appendChild(svg);
 for(var k=0;k<=10;k++){var t=t0+(t1-t0)*k/10,x=ZX(t);el("line",{x1:x,x2:x,y1:top,y2:top+procs.length*LH,stroke:"#eceef2"},svg);var tx=el("text",{x:x,y:top+procs.length*LH+12,"font-size":10,"text-anchor":"middle",fill:"#666"},svg);tx.textContent=t.toFixed(4)+"s";}
 procs.forEach(function(p,i){var t=el("text",{x:L-6,y:top+i*LH+14,"font-size":11,"text-anchor":"end",fill:"#333"},svg);t.textContent=D.processes[p];});
 Z.marks.forEach(function(m){var i=procs.indexOf(m[0]),x0=ZX(m[4]),x1=m[5]===null?ZX(t1):ZX(m[5]),y=top+i*LH+2;
  var r=el("rect",{x:x0,y:y,width:Math.max(x1-x0,2),height:LH-6,fill:COL[m[6]],"fill-opacity":m[7]==1?0.95:0.35,"class":"zop"},svg);
  if(m[7]==1){r.setAttribute("stroke","#c0006a");r.setAttribute("stroke-width",2.5);}
  var label=m[1]=="write"?"w "+m[3]:(m[1]=="read"?"r "+(m[3]===null?"nil":m[3]):(m[1]=="delete"?"del":(m[1]=="cas"?"cas "+(m[3]===null?"nil":m[3]):"cas \u2717")));var tx=el("text",{x:x0+3,y:y+12,"font-size":10,fill:"#111"},svg);tx.textContent=label;
  hover(r,"#"+m[8]+" "+D.processes[m[0]]+" "+m[1]+"("+m[2]+") "+(m[3]===null?"":m[3])+" "+m[6]+" ["+m[4].toFixed(6)+", "+(m[5]===null?"?":m[5].toFixed(6))+"]");});
 return Z.marks.length;}
function quantile(a,q){if(!a.length)return null;var s=a.slice().sort(function(x,y){return x-y;});return s[Math.min(s.length-1,Math.floor(q*s.length))];}
function latency(){var H=260,top=10,bot=H-22;var svg=el("svg",{width:W,height:H,id:"latency-svg"});document.getElementById("latency").appendChild(svg);
 bands(svg,top,bot,false);axis(svg,top,bot);
 var pts=D.marks.filter(function(m){return m[5]!==null;}).map(function(m){return[m[4],Math.max((m[5]-m[4])*1000,0.01),m[6]];});
 var maxl=Math.max(10,Math.max.apply(null,pts.map(function(p){return p[1];}).concat([1])));var lo=Math.log10(0.1),hi=Math.log10(maxl*1.2);
 function Y(ms){return bot-(bot-top)*(Math.log10(Math.max(ms,0.1))-lo)/(hi-lo);}
 [0.1,1,10,100,1000,10000].forEach(function(v){if(v<=maxl*1.2){var y=Y(v);el("line",{x1:L,x2:W-R,y1:y,y2:y,stroke:"#eceef2"},svg);var t=el("text",{x:L-6,y:y+3,"font-size":10,"text-anchor":"end",fill:"#666"},svg);t.textContent=v+" ms";}});
 var n=0;pts.forEach(function(p){el("circle",{cx:X(p[0]),cy:Y(p[1]),r:1.6,fill:COL[p[2]],"fill-opacity":0.5,"class":"lat"},svg);n++;});
 var win=Math.max(END/60,0.5),p50=[],p99=[];for(var t=0;t<END;t+=win){var v=pts.filter(function(p){return p[0]>=t&&p[0]<t+win&&p[2]=="ok";}).map(function(p){return p[1];});
  if(v.length){p50.push([t+win/2,quantile(v,0.5)]);p99.push([t+win/2,quantile(v,0.99)]);}}
 [[p50,"#1d2330","p50"],[p99,"#c0006a","p99"]].forEach(function(s){if(!s[0].length)return;el("polyline",{points:s[0].map(function(p){return X(p[0])+","+Y(p[1]);}).join(" "),fill:"none",stroke:s[1],"stroke-width":1.8,"class":"pline"},svg);
  var last=s[0][s[0].length-1];var t=el("text",{x:W-R-2,y:Y(last[1])-4,"font-size":11,"text-anchor":"end",fill:s[1]},svg);t.textContent=s[2];});
 var all=pts.filter(function(p){return p[2]=="ok";}).map(function(p){return p[1];});
 h("div","ok operations: p50 "+(all.length?quantile(all,0.5).toFixed(1):"-")+" ms, p99 "+(all.length?quantile(all,0.99).toFixed(1):"-")+" ms, max "+(all.length?Math.max.apply(null,all).toFixed(1):"-")+" ms",document.getElementById("latency"));
 return n;}
function throughput(){var H=180,top=10,bot=H-22;var svg=el("svg",{width:W,height:H,id:"throughput-svg"});document.getElementById("throughput").appendChild(svg);
 bands(svg,top,bot,false);axis(svg,top,bot);var B=Math.max(1,Math.ceil(END)),scale=D.total_ops/Math.max(D.marks.length,1);
 var c={ok:new Array(B).fill(0),fail:new Array(B).fill(0),unknown:new Array(B).fill(0)};
 D.marks.forEach(function(m){var t=m[5]===null?m[4]:m[5];var b=Math.min(B-1,Math.floor(t));c[m[6]][b]+=scale;});
 var maxc=1;for(var i=0;i<B;i++)maxc=Math.max(maxc,c.ok[i]+c.fail[i]+c.unknown[i]);
 function Y(v){return bot-(bot-top)*v/maxc;}
 [0,Math.round(maxc/2),Math.round(maxc)].forEach(function(v){var t=el("text",{x:L-6,y:Y(v)+3,"font-size":10,"text-anchor":"end",fill:"#666"},svg);t.textContent=v+"/s";});
 var bw=(W-L-R)/B;for(var i=0;i<B;i++){var y=bot;["ok","fail","unknown"].forEach(function(k){var v=c[k][i];if(v>0){var hgt=(bot-top)*v/maxc;
  var r=el("rect",{x:L+i*bw+0.5,y:y-hgt,width:Math.max(bw-1,1),height:hgt,fill:COL[k],"fill-opacity":0.8,"class":"bar"},svg);hover(r,i+"-"+(i+1)+"s: "+Math.round(v)+" "+k);y-=hgt;}});}
 return B;}
function coverage(){var t="<table><tr><th>coverage</th><th>count</th><th>required</th></tr>";
 D.coverage.forEach(function(c){var miss=c[2]&&c[1]==0;t+="<tr"+(miss?' class="zero"':"")+"><td>"+esc(c[0])+'</td><td class="num">'+c[1]+"</td><td>"+(c[2]?(miss?"required, MISSING":"required"):"")+"</td></tr>";});
 t+="</table>";var skipped=Object.keys(S.faults_skipped);if(skipped.length)t+="<div>faults skipped (could not be applied when due): "+esc(skipped.map(function(k){return k+" "+S.faults_skipped[k]+" ("+(S.skip_reasons[k]||"?")+")";}).join(", "))+"</div>";
 Object.keys(S.not_supported_here).forEach(function(k){t+="<div>not run on this machine: "+esc(k)+": "+esc(S.not_supported_here[k])+"</div>";});
 document.getElementById("coverage").innerHTML=t;}
function counterexample(){var box=document.getElementById("counterexample");
 if(S.linearizable!==false&&!S.lost_writes&&!Object.keys(S.divergent_keys).length){box.textContent=S.linearizable===true?"none: the history is linearizable.":"none found (the check did not finish).";return;}
 var t="";if(S.linearizable===false)t+="<div><b>"+esc(S.explanation)+"</b></div>";
 t+="<table class='cx'><tr><th>#</th><th>process</th><th>op</th><th>key</th><th>value</th><th>call (s)</th><th>return (s)</th><th>outcome</th></tr>";
 D.marks.filter(function(m){return m[7]==1;}).forEach(function(m){t+="<tr><td>"+m[8]+"</td><td>"+esc(D.processes[m[0]])+"</td><td>"+esc(m[1])+"</td><td>"+esc(m[2])+"</td><td>"+esc(m[3]===null?"(missing)":m[3])+"</td><td>"+m[4].toFixed(6)+"</td><td>"+(m[5]===null?"?":m[5].toFixed(6))+"</td><td>"+esc(m[6])+"</td></tr>";});
 t+="</table>";if(S.lost_writes)t+="<div>lost acknowledged writes: "+S.lost_writes+" (outlined in black above)</div>";
 Object.keys(S.divergent_keys).forEach(function(k){t+="<div>divergent key "+esc(k)+": "+esc(JSON.stringify(S.divergent_keys[k]))+"</div>";});
 box.innerHTML=t;}
function faultTable(){var t="<table><tr><th>at (s)</th><th>until (s)</th><th>kind</th><th>targets</th><th>leader before</th><th>detail</th><th>verified</th></tr>";
 D.faults.forEach(function(f){t+="<tr><td>"+f[1].toFixed(2)+"</td><td>"+f[2].toFixed(2)+'</td><td><i class="sw" style="background:'+(FCOL[f[0]]||"#999")+'"></i>'+esc(f[0])+"</td><td>"+esc(f[3])+"</td><td>"+esc(f[4])+"</td><td>"+esc(f[5])+"</td><td>"+(f[6]?"yes":"NO")+"</td></tr>";});
 document.getElementById("faults").innerHTML=t+"</table>";}
header();var ops=timeline();var lat=latency();var bars=throughput();coverage();counterexample();zoom();faultTable();
setStatus("rendered marks="+ops+" latency_points="+lat+" throughput_buckets="+bars+" faults="+D.faults.length+" sampled="+D.marks.length+" total="+D.total_ops);
</script></body></html>
"""
