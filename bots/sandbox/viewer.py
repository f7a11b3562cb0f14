# ruff: noqa: E501 - the page is kept as one literal, long lines included
"""The viewer page: channels and chats as members see them, and a box to post as a member.

One static page; everything it shows comes from the control API, so it needs no templates.
``/#discord/<channel id>`` or ``/#telegram/<chat id>`` opens a channel or chat directly.
"""

from __future__ import annotations

from aiohttp import web

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Comms sandbox</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:0;display:flex;height:100vh;color:#222}
 nav{width:260px;background:#2b2d31;color:#ddd;overflow:auto;padding:8px}
 nav h2{font-size:12px;text-transform:uppercase;color:#999;margin:14px 4px 4px}
 nav a{display:block;padding:4px 8px;border-radius:4px;color:#ddd;text-decoration:none}
 nav a.sel,nav a:hover{background:#404249;color:#fff}
 main{flex:1;display:flex;flex-direction:column}
 header{padding:10px 16px;border-bottom:1px solid #ddd;font-weight:600}
 #log{flex:1;overflow:auto;padding:8px 16px}
 .msg{padding:6px 0;border-bottom:1px solid #f0f0f0}
 .who{font-weight:600}.bot{background:#5865f2;color:#fff;border-radius:3px;font-size:10px;padding:0 4px;margin-left:4px}
 .tag{font-size:11px;color:#666;margin-left:6px}.text{white-space:pre-wrap}
 form{display:flex;gap:6px;padding:10px 16px;border-top:1px solid #ddd}
 form input{flex:1;padding:6px}
</style></head><body>
<nav id="nav"></nav>
<main><header id="title">Select a channel or chat</header><div id="log"></div>
<form id="post"><select id="who"></select><input id="text" placeholder="Write as a community member" autocomplete="off"><button>Send</button></form>
</main>
<script>
let current=null, world=null;
const esc=s=>String(s??"").replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
async function j(url,opts){const r=await fetch(url,opts);return r.json();}
async function loadWorld(){
  world=await j("control/world");
  let h="";
  for(const g of world.discord.guilds){
    h+=`<h2>Discord &middot; ${esc(g.name)}</h2>`;
    for(const c of [...g.channels,...g.threads]) h+=link("discord",c.id,(c.thread?"&nbsp;&nbsp;&#8627; ":"# ")+c.name+(c.locked?" (locked)":"")+(c.private?" (private)":""));
  }
  h+=`<h2>Telegram</h2>`;
  for(const c of world.telegram.chats) h+=link("telegram",c.id,esc(c.title||c.first_name)+` <small>(${c.type})</small>`);
  document.getElementById("nav").innerHTML=h;
}
function link(p,id,label){const sel=current&&current.p===p&&current.id==id?"sel":"";return `<a href="#" class="${sel}" onclick="pick('${p}','${id}');return false">${label}</a>`;}
function users(){
  if(!current)return [];
  if(current.p==="discord"){const g=world.discord.guilds[0];return g.members.filter(m=>!m.bot).map(m=>[m.id,m.username]);}
  return world.telegram.users.map(u=>[u.id,u.username||u.first_name]);
}
async function pick(p,id){current={p,id};history.replaceState(null,"","#"+p+"/"+id);document.getElementById("who").innerHTML=users().map(([i,n])=>`<option value="${i}">${esc(n)}</option>`).join("");await loadWorld();await refresh();}
async function refresh(){
  if(!current)return;
  const base=current.p==="discord"?`control/discord/channels/${current.id}`:`control/telegram/chats/${current.id}`;
  const [info,msgs]=await Promise.all([j(base),j(base+"/messages")]);
  document.getElementById("title").textContent=(current.p==="discord"?"#"+info.name:(info.title||info.first_name))+(info.locked?" (locked)":"")+(info.archived?" (archived)":"");
  document.getElementById("log").innerHTML=msgs.map(m=>{
    const a=m.author||{username:(m.sender_chat||{}).title};
    const tags=[m.pinned&&"pinned",m.edited&&"edited",m.silent&&"silent",m.crossposted&&"published",m.thread&&"thread",m.ephemeral&&"only visible to "+m.visible_to,m.mention_everyone&&"@everyone ping"].filter(Boolean);
    return `<div class="msg"><span class="who">${esc(a.username||a.first_name)}</span>${a.bot?'<span class="bot">BOT</span>':""}${tags.map(t=>`<span class="tag">${esc(t)}</span>`).join("")}<div class="text">${esc(m.text)}</div></div>`;}).join("");
}
document.getElementById("post").onsubmit=async e=>{
  e.preventDefault(); if(!current)return;
  const text=document.getElementById("text").value, who=document.getElementById("who").value;
  const url=current.p==="discord"?`control/discord/channels/${current.id}/messages`:`control/telegram/chats/${current.id}/messages`;
  const body=current.p==="discord"?{user_id:who,content:text}:{user:Number(who),text};
  const r=await j(url,{method:"POST",headers:{"Content-Type":"application/json"},body:JSON.stringify(body)});
  if(r.error)alert(r.error); else document.getElementById("text").value="";
  refresh();
};
async function boot(){await loadWorld();const h=location.hash.slice(1).split("/");if(h.length===2&&(h[0]==="discord"||h[0]==="telegram"))await pick(h[0],h[1]);}
boot();setInterval(refresh,1000);
</script></body></html>
"""


async def viewer(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")
