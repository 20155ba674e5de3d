// Switchboard web chat: speaks the JSON protocol (docs/protocol.md) over a WebSocket
// at /ws on the page's own host. Every piece of user text is rendered with
// textContent, never as HTML.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'), me: $('me'), currentRoom: $('current-room'), menu: $('menu'),
    rooms: $('rooms'), privates: $('privates'), members: $('members'), membersTitle: $('members-title'),
    joinForm: $('join-form'), joinInput: $('join-input'),
    messages: $('messages'), sayForm: $('say-form'), sayInput: $('say-input'), sayButton: $('say-button'),
    nickDialog: $('nick-dialog'), nickForm: $('nick-form'), nickInput: $('nick-input'),
    nickError: $('nick-error'), nickButton: $('nick-button'),
    passwordInput: $('password-input'), rememberInput: $('remember-input'),
    registerButton: $('register-button'), logout: $('logout'),
  };

  const MAX_KEPT_MESSAGES = 500;
  const wsUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';

  let socket = null;
  let attempts = 0;
  let reconnectTimer = null;
  let nextId = 1;
  const pending = new Map(); // request id -> what it was for
  let wantedNick = '';
  let myClient = null;
  let myNick = '';
  const joined = new Set(); // folded room names we are in
  const conversations = new Map(); // key -> { key, title, kind, items, unread }
  let roomList = []; // from the last "rooms" reply
  let current = null;
  let account = null; // the account we are signed in to
  let registerPassword = null; // register this once the name is ours
  let replaced = false; // signed in elsewhere: do not reconnect on our own
  // A sign-in token (opaque, issued by the server, revocable): a reload signs in again
  // without asking for the password.
  const TOKEN_KEY = 'switchboard.token';
  const storedToken = () => { try { return localStorage.getItem(TOKEN_KEY); } catch (e) { return null; } };
  const storeToken = (token) => {
    try { if (token) localStorage.setItem(TOKEN_KEY, token); else localStorage.removeItem(TOKEN_KEY); } catch (e) { /* private mode */ }
  };

  const fold = (name) => name.toLowerCase();
  const roomKey = (room) => fold(room);
  const privateKey = (nick) => '@' + fold(nick);

  function setStatus(kind, text) {
    ui.status.className = 'status ' + kind;
    ui.status.textContent = text;
  }

  function send(message, purpose) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return null;
    const id = String(nextId++);
    message.id = id;
    pending.set(id, purpose || message.type);
    socket.send(JSON.stringify(message));
    return id;
  }

  // ---- connection -------------------------------------------------------------------

  function connect() {
    reconnectTimer = null;
    setStatus('connecting', attempts ? 'reconnecting…' : 'connecting…');
    let ws;
    try {
      ws = new WebSocket(wsUrl);
    } catch (error) {
      scheduleReconnect();
      return;
    }
    socket = ws;
    ws.addEventListener('open', () => {
      setStatus('connected', 'connected');
      const token = storedToken();
      if (token) send({ type: 'auth', action: 'token', token }, 'token');
      else if (wantedNick) send({ type: 'nick', nick: wantedNick }, 'register');
      else showNickDialog('');
    });
    ws.addEventListener('message', (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (error) { return; }
      handle(message);
    });
    ws.addEventListener('close', (event) => {
      if (socket !== ws) return;
      socket = null;
      myClient = null;
      pending.clear();
      setInputEnabled(false);
      if (event.code === 1001 && current) addNotice(current, 'server going away; reconnecting');
      if (event.code === 4001) {
        // Our account signed in from another window or device, which has the name now.
        replaced = true;
        setStatus('offline', 'signed in elsewhere — reload to continue here');
        if (current) addNotice(current, 'you signed in from somewhere else; this page stopped');
        return;
      }
      if (event.code === 4002) {
        // A server operator disconnected us: coming straight back would be rude.
        replaced = true;
        setStatus('offline', 'disconnected by a server operator — reload to come back');
        return;
      }
      if (replaced) return;
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    attempts += 1;
    // Exponential backoff with jitter, 0.5 s up to 30 s.
    const delay = Math.min(30000, 500 * 2 ** Math.min(attempts - 1, 6)) * (0.75 + Math.random() / 2);
    const until = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      setStatus('offline', 'offline — retrying in ' + left + 's');
    };
    tick();
    const countdown = setInterval(tick, 1000);
    reconnectTimer = setTimeout(() => { clearInterval(countdown); connect(); }, delay);
  }

  // ---- incoming ---------------------------------------------------------------------

  function handle(message) {
    const purpose = message.id !== undefined ? pending.get(String(message.id)) : undefined;
    if (message.id !== undefined) pending.delete(String(message.id));
    switch (message.type) {
      case 'welcome': return onWelcome(message);
      case 'joined': return onJoined(message);
      case 'left': return onLeft(message);
      case 'message': return onMessage(message);
      case 'history':
        if (message.offline) {
          const count = (message.messages || []).length;
          addNotice(current, `${count} message${count === 1 ? '' : 's'} while you were away`);
        }
        return (message.messages || []).forEach(onMessage);
      case 'signed_in': return onSignedIn(message);
      case 'kept': return addNotice(current, `${message.for} is offline; your message is kept for their next login`);
      case 'password_changed': return addNotice(current, 'your password is changed');
      case 'account_dropped':
        account = null;
        storeToken(null);
        ui.logout.hidden = true;
        ui.me.textContent = myNick;
        return addNotice(current, `the account ${message.account} is deleted; the name is anyone's now`);
      case 'nick': return onNick(message);
      case 'notice': return addNotice(current, message.text);
      case 'topic': {
        const key = fold(message.room);
        // A topic without text only ever answers a question: joiners hear set ones.
        if (message.text === null || message.text === undefined) {
          return addNotice(key, `${message.room} has no topic`);
        }
        return addNotice(key, `topic: ${message.text} (set by ${message.set_by})`);
      }
      case 'invited': return addNotice(current, `${message.by} invited you to ${message.room}; /join ${message.room} to go in`);
      case 'is_away': return addNotice(current, `${message.nick} is away: ${message.text}`);
      case 'away': return addNotice(current, message.away ? 'you are marked as away' : 'you are back');
      case 'topic_changed':
        return addNotice(fold(message.room), message.text
          ? `${message.nick} set the topic: ${message.text}`
          : `${message.nick} cleared the topic`);
      case 'rooms': roomList = message.rooms || []; return renderSidebar();
      case 'members': return renderMembers(message.room, message.members || [], message.devices || [], message.away || [], message.operators || []);
      case 'whois': {
        const rooms = (message.rooms || []).join(' ') || 'no rooms';
        const from = message.address ? `, from ${message.address}` : '';
        return addNotice(current, `${message.nick} is client ${message.client}, via ${message.door}, in ${rooms}${from}`);
      }
      case 'rules': return onRules(message);
      case 'command_result': {
        const result = message.result === undefined ? '' : ` ${JSON.stringify(message.result)}`;
        const text = message.ok
          ? `${message.from}: ${message.name}: ok${result}`
          : `${message.from}: ${message.name} failed: ${message.error || 'no reason given'}${result}`;
        return addItem(current, { kind: message.ok ? 'notice command-result' : 'error command-result', text });
      }
      case 'command': return addNotice(current, `${message.from} sent you command ${message.name} (this page does not answer commands)`);
      case 'device_added':
        return addNotice(current, `device ${message.name} added; its token (shown this once, keep it): ${message.token}`);
      case 'device_removed': return addNotice(current, `device ${message.name} removed; its token no longer works`);
      case 'devices':
        return addNotice(current, message.devices.length ? `your devices: ${message.devices.join(', ')}` : 'you have no devices; /device add NAME adds one');
      case 'error': return onError(message, purpose);
      default: return undefined; // ok, pong, and anything newer than this page
    }
  }

  function onWelcome(message) {
    myClient = message.client;
    myNick = message.nick;
    wantedNick = message.nick;
    attempts = 0;
    ui.me.textContent = myNick;
    hideNickDialog();
    if (registerPassword) {
      send({ type: 'auth', action: 'register', password: registerPassword, remember: ui.rememberInput.checked }, 'register-account');
      registerPassword = null;
    }
    setInputEnabled(true);
    // Rejoin the rooms we were in before a reconnect (the default room comes by itself).
    for (const conversation of conversations.values()) {
      if (conversation.kind === 'room' && conversation.wanted) {
        // A keyed room's key, as typed in /join (undefined is left out of the JSON).
        send({ type: 'join', room: conversation.title, key: conversation.joinKey });
      }
    }
    refreshRooms();
  }

  function onJoined(message) {
    const key = roomKey(message.room);
    const conversation = conversationFor(key, message.room, 'room');
    if (message.client === myClient) {
      joined.add(key);
      conversation.wanted = true;
      if (!current || conversation.justAsked || !joined.has(current)) switchTo(key);
      conversation.justAsked = false;
    }
    addNotice(key, `${message.nick} joined ${message.room}`);
    if (key === current) refreshMembers();
    refreshRooms();
  }

  function onLeft(message) {
    const key = roomKey(message.room);
    const reason = message.reason ? ` (${message.reason})` : '';
    addNotice(key, `${message.nick} left ${message.room}${reason}`);
    if (message.client === myClient) {
      joined.delete(key);
      const conversation = conversations.get(key);
      if (conversation) conversation.wanted = false;
      if (current === key) {
        const next = [...joined][0];
        if (next) switchTo(next); else renderSidebar();
      }
    } else if (key === current) {
      refreshMembers();
    }
    refreshRooms();
  }

  function onMessage(message) {
    let key;
    if (message.room !== undefined) {
      key = roomKey(message.room);
      conversationFor(key, message.room, 'room');
    } else {
      const other = message.from_client === myClient ? message.to : message.from;
      key = privateKey(other);
      conversationFor(key, other, 'private');
    }
    // History (replayed on join, again after a reconnect) is shown once per message.
    const conversation = conversations.get(key);
    if (message.history && conversation.items.some((item) => item.message && item.message.id === message.id)) return;
    addItem(key, { kind: 'message', message });
  }

  function onRules(message) {
    const who = message.owner ? `owned by ${message.owner}` : 'no owner';
    const ops = (message.operators || []).length ? `; operators ${message.operators.join(', ')}` : '';
    const key = message.key ? `key ${message.key}` : message.has_key && 'needs a key';
    const modes = [message.invite_only && 'invite-only', message.registered_only && 'accounts only', key].filter(Boolean).join(', ') || 'open to all';
    // Who may speak and set the topic, only where it is not everyone (as the line door says it).
    const speech = (message.moderated ? '; moderated (+m)' : '') + (message.topic_locked ? '; topic locked (+t)' : '');
    addNotice(current, `${message.room}: ${who}${ops}; ${modes}${speech}`);
    const until = (item) => item.expires ? ` until ${new Date(item.expires).toLocaleString()}` : '';
    const why = (item) => item.reason ? ` (${item.reason})` : '';
    for (const ban of message.bans || []) addNotice(current, `banned: ${ban.target} by ${ban.by}${until(ban)}${why(ban)}`);
    for (const mute of message.mutes || []) addNotice(current, `muted: ${mute.target} by ${mute.by}${until(mute)}${why(mute)}`);
  }

  // `/ban TARGET [DURATION] [reason]`: a second word that starts with a digit is a duration.
  function restriction(action, room, rest) {
    const [target, maybe, ...words] = rest.split(' ').filter(Boolean);
    if (!target) return null;
    const request = { type: 'moderate', action, room, target };
    if (maybe && /^[0-9]/.test(maybe)) {
      request.duration = maybe;
      if (words.length) request.reason = words.join(' ');
    } else if (maybe) {
      request.reason = [maybe, ...words].join(' ');
    }
    return request;
  }

  function onNick(message) {
    if (message.client === myClient) {
      myNick = message.new;
      wantedNick = message.new;
      ui.me.textContent = myNick;
    }
    addNotice(current, `${message.old} is now known as ${message.new}`);
    refreshMembers();
  }

  function onSignedIn(message) {
    account = message.account;
    if (message.token) storeToken(message.token);
    ui.me.textContent = myNick ? `${myNick} ✓` : account;
    ui.me.title = 'signed in as ' + account;
    ui.logout.hidden = false;
    ui.passwordInput.value = '';
    if (message.created) addNotice(current, `${account} is registered to you; log in with its password next time`);
  }

  function onError(message, purpose) {
    if (purpose === 'token') {
      // Only a token the server does not know (revoked, expired) is forgotten; when
      // the server is just busy or limiting, it is kept for the next try.
      if (message.code === 'bad_token') storeToken(null);
      else {
        showNickDialog(message.text);
        return;
      }
      if (wantedNick) send({ type: 'nick', nick: wantedNick }, 'register');
      else showNickDialog('');
      return;
    }
    if (purpose === 'login' || purpose === 'register-account') {
      registerPassword = null;
      showNickDialog(message.text);
      return;
    }
    if (purpose === 'register') {
      registerPassword = null;
      // Our name was refused: ask again, saying why, right in the dialog.
      showNickDialog(message.text);
      return;
    }
    // The server's words are every door's; the page's own commands are ours to add.
    const hint = message.code === 'registered_only' ? ' (/register PASSWORD, or /login NAME PASSWORD)' : '';
    addItem(current, { kind: 'error', text: message.text + hint });
  }

  // ---- conversations ----------------------------------------------------------------

  function conversationFor(key, title, kind) {
    let conversation = conversations.get(key);
    if (!conversation) {
      conversation = { key, title, kind, items: [], unread: 0, wanted: false, justAsked: false };
      conversations.set(key, conversation);
      renderSidebar();
    }
    return conversation;
  }

  function addNotice(key, text) {
    addItem(key, { kind: 'notice', text });
  }

  function addItem(key, item) {
    const conversation = key && conversations.get(key);
    if (!conversation) return;
    item.time = item.message ? item.message.time : Date.now();
    conversation.items.push(item);
    if (conversation.items.length > MAX_KEPT_MESSAGES) conversation.items.shift();
    if (key === current) {
      const stick = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 40;
      ui.messages.appendChild(renderItem(item));
      while (ui.messages.childElementCount > MAX_KEPT_MESSAGES) ui.messages.firstElementChild.remove();
      if (stick) ui.messages.scrollTop = ui.messages.scrollHeight;
    } else if (item.kind === 'message' && !item.message.history) {
      conversation.unread += 1;
      renderSidebar();
    }
  }

  function span(className, text) {
    const element = document.createElement('span');
    element.className = className;
    element.textContent = text;
    return element;
  }

  function renderItem(item) {
    const li = document.createElement('li');
    const time = new Date(item.time);
    li.appendChild(span('time', time.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })));
    if (item.kind === 'message') {
      const m = item.message;
      // A moderation notice (from the server: from_client 0) reads as its text.
      const moderation = m.from_client === 0 && m.data && m.data.moderation;
      li.className = 'message' + (m.action ? ' action' : '') + (m.history ? ' history' : '') + (moderation ? ' moderation' : '');
      const mine = m.from_client === myClient;
      if (m.action) {
        li.appendChild(span('from' + (mine ? ' mine' : ''), '* ' + m.from));
      } else {
        li.appendChild(span('from' + (mine ? ' mine' : ''), m.from));
      }
      if (m.text) li.appendChild(span('text', m.text));
      if (m.data !== undefined && !moderation) {
        if (m.text) li.appendChild(document.createTextNode(' '));
        li.appendChild(span('data', JSON.stringify(m.data)));
      }
    } else {
      li.className = item.kind;
      li.appendChild(span('text', item.text));
    }
    return li;
  }

  function switchTo(key) {
    const conversation = conversations.get(key);
    if (!conversation) return;
    current = key;
    conversation.unread = 0;
    ui.currentRoom.textContent = conversation.kind === 'room' ? conversation.title : '@' + conversation.title;
    ui.messages.replaceChildren(...conversation.items.map(renderItem));
    ui.messages.scrollTop = ui.messages.scrollHeight;
    document.body.classList.remove('sidebar-open');
    ui.menu.setAttribute('aria-expanded', 'false');
    renderSidebar();
    refreshMembers();
    focusInput();
  }

  // ---- sidebar ----------------------------------------------------------------------

  function refreshRooms() { send({ type: 'rooms' }); }

  function refreshMembers() {
    const conversation = current && conversations.get(current);
    if (conversation && conversation.kind === 'room' && joined.has(current)) {
      send({ type: 'members', room: conversation.title });
    } else {
      renderMembers(null, []);
    }
  }

  function renderMembers(room, members, devices = [], away = [], operators = []) {
    const conversation = current && conversations.get(current);
    if (room !== null && (!conversation || roomKey(room) !== current)) return;
    ui.membersTitle.textContent = room ? `Members (${members.length})` : 'Members';
    ui.members.replaceChildren(...members.map((nick) => {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'name';
      button.textContent = (operators.includes(nick) ? '@' : '') + nick + (devices.includes(nick) ? ' (device)' : '') + (away.includes(nick) ? ' (away)' : '');
      button.title = 'Private message ' + nick;
      button.addEventListener('click', () => {
        if (fold(nick) === fold(myNick)) return;
        conversationFor(privateKey(nick), nick, 'private');
        switchTo(privateKey(nick));
      });
      li.appendChild(button);
      return li;
    }));
  }

  function sidebarEntry(conversation, count, onOpen, onPart) {
    const li = document.createElement('li');
    if (conversation && conversation.key === current) li.className = 'active';
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'name';
    button.textContent = conversation.title;
    button.addEventListener('click', onOpen);
    li.appendChild(button);
    if (conversation.unread) li.appendChild(span('unread', String(conversation.unread)));
    if (count !== null) li.appendChild(span('count', String(count)));
    if (onPart) {
      const part = document.createElement('button');
      part.type = 'button';
      part.className = 'part';
      part.textContent = '×';
      part.title = 'Leave ' + conversation.title;
      part.addEventListener('click', onPart);
      li.appendChild(part);
    }
    return li;
  }

  function renderSidebar() {
    const counts = new Map(roomList.map((room) => [roomKey(room.name), room]));
    const keys = new Set([...joined, ...counts.keys()]);
    const rooms = [...keys].sort().map((key) => {
      const known = counts.get(key);
      const conversation = conversations.get(key) || { key, title: known ? known.name : key, unread: 0 };
      const inRoom = joined.has(key);
      return sidebarEntry(
        conversation,
        known ? known.members : null,
        () => (inRoom ? switchTo(key) : joinRoom(conversation.title)),
        inRoom ? () => send({ type: 'part', room: conversation.title }) : null,
      );
    });
    ui.rooms.replaceChildren(...rooms);
    const privates = [...conversations.values()].filter((c) => c.kind === 'private')
      .map((conversation) => sidebarEntry(conversation, null, () => switchTo(conversation.key), null));
    ui.privates.replaceChildren(...privates);
  }

  // `joinKey`: the room's key (`+k`), for a room that has one.
  function joinRoom(name, joinKey) {
    let room = name.trim();
    if (!room) return;
    if (!room.startsWith('#')) room = '#' + room;
    const key = roomKey(room);
    if (joined.has(key)) { switchTo(key); return; }
    const conversation = conversationFor(key, room, 'room');
    conversation.justAsked = true;
    if (joinKey) conversation.joinKey = joinKey;
    send({ type: 'join', room, key: joinKey || conversation.joinKey });
  }

  // ---- typing -----------------------------------------------------------------------

  function setInputEnabled(enabled) {
    ui.sayInput.disabled = !enabled;
    ui.sayButton.disabled = !enabled;
    if (enabled) focusInput();
  }

  function focusInput() {
    if (!ui.sayInput.disabled && ui.nickDialog.hidden) ui.sayInput.focus();
  }

  function showNickDialog(error) {
    ui.nickDialog.hidden = false;
    ui.nickError.textContent = error || '';
    ui.nickInput.value = ui.nickInput.value || wantedNick;
    ui.nickInput.focus();
    ui.nickInput.select();
  }

  function hideNickDialog() {
    ui.nickDialog.hidden = true;
    ui.nickError.textContent = '';
  }

  function target() {
    const conversation = current && conversations.get(current);
    return conversation || null;
  }

  function say(text) {
    const conversation = target();
    if (!conversation) return;
    if (conversation.kind === 'private') send({ type: 'msg', to: conversation.title, text });
    else send({ type: 'say', room: conversation.title, text });
  }

  function command(line) {
    const [word, ...restWords] = line.slice(1).split(' ');
    const rest = restWords.join(' ').trim();
    const conversation = target();
    switch (word.toLowerCase()) {
      case 'me':
        if (!conversation || !rest) return;
        if (conversation.kind === 'private') send({ type: 'action', to: conversation.title, text: rest });
        else send({ type: 'action', room: conversation.title, text: rest });
        return;
      case 'msg': case 'query': {
        const [to, ...words] = rest.split(' ');
        if (!to) return;
        conversationFor(privateKey(to), to, 'private');
        switchTo(privateKey(to));
        if (words.length) send({ type: 'msg', to, text: words.join(' ') });
        return;
      }
      case 'join': { const [room = '', joinKey] = rest.split(' ').filter(Boolean); joinRoom(room, joinKey); return; }
      case 'part': send({ type: 'part', room: rest || (conversation && conversation.title) }); return;
      case 'nick': if (rest) send({ type: 'nick', nick: rest }); return;
      case 'whois': if (rest) send({ type: 'whois', nick: rest }); return;
      case 'rooms': refreshRooms(); return;
      case 'away': send(rest ? { type: 'away', text: rest } : { type: 'away' }); return;
      case 'back': send({ type: 'away' }); return;
      case 'register':
        if (rest) send({ type: 'auth', action: 'register', password: rest, remember: true }, 'account');
        return;
      case 'login': {
        const [name, ...words] = rest.split(' ');
        if (name && words.length) send({ type: 'auth', action: 'login', nick: name, password: words.join(' '), remember: true }, 'account');
        return;
      }
      case 'logout': logout(); return;
      case 'topic': {
        const room = conversation && conversation.kind === 'room' ? conversation.title : undefined;
        send(rest ? { type: 'topic', room, text: rest } : { type: 'topic', room });
        return;
      }
      // Moderation, in the room on screen (see the README's Moderation section).
      case 'kick': case 'op': case 'deop': case 'invite': case 'ban': case 'mute':
      case 'unban': case 'unmute': case 'mode': case 'rules': {
        const room = conversation && conversation.kind === 'room' ? conversation.title : undefined;
        const action = word.toLowerCase();
        const [first, ...words] = rest.split(' ').filter(Boolean);
        let request = null;
        if (action === 'rules') request = { type: 'moderate', action, room };
        else if (action === 'ban' || action === 'mute') request = restriction(action, room, rest);
        else if (action === 'unban' || action === 'unmute') request = first && { type: 'moderate', action, room, target: first };
        else if (action === 'mode') {
          request = { type: 'moderate', action, room };
          const changes = rest.split(' ').filter(Boolean);
          while (changes.length) {
            // Letter by letter, as the line door and IRC read them: `+mt`, `+k-t KEY`.
            let on = true;
            for (const letter of changes.shift()) {
              if (letter === '+' || letter === '-') on = letter === '+';
              else if (letter === 'i') request.invite_only = on;
              else if (letter === 'r' || letter === 'R') request.registered_only = on;
              // +k KEY sets the room's key, -k takes it off.
              else if (letter === 'k') request.key = on ? (changes.shift() || '') : null;
              // +m: only operators speak; +t: only operators set the topic.
              else if (letter === 'm') request.moderated = on;
              else if (letter === 't') request.topic_locked = on;
            }
          }
        } else if (first) {
          request = { type: 'moderate', action, room, nick: first };
          if (action === 'kick' && words.length) request.reason = words.join(' ');
        }
        if (request) send(request);
        else addItem(current, { kind: 'error', text: `usage: /${action} NAME (see /rules, /ban TARGET [DURATION] [reason], /mode +i -r +k KEY +m -t)` });
        return;
      }
      case 'kill': {
        const [nick, ...words] = rest.split(' ').filter(Boolean);
        if (nick) send(words.length ? { type: 'kill', nick, reason: words.join(' ') } : { type: 'kill', nick });
        return;
      }
      // Devices: /command NAME COMMAND [ARGS as JSON or text], /device add|remove NAME, /devices.
      case 'command': case 'cmd': {
        const [to, name, ...words] = rest.split(' ').filter(Boolean);
        if (!to || !name) {
          addItem(current, { kind: 'error', text: 'usage: /command NAME COMMAND [ARGS], e.g. /command drone7 land {"speed":2}' });
          return;
        }
        const request = { type: 'command', to, name };
        if (words.length) {
          const text = words.join(' ');
          try { request.args = JSON.parse(text); } catch { request.args = text; }
        }
        send(request);
        return;
      }
      case 'device': {
        const [action, name] = rest.split(' ').filter(Boolean);
        if ((action === 'add' || action === 'remove') && name) send({ type: 'device', action, name });
        else if (action === 'list') send({ type: 'device', action: 'list' });
        else addItem(current, { kind: 'error', text: 'usage: /device add NAME, /device remove NAME, /devices' });
        return;
      }
      case 'devices': send({ type: 'device', action: 'list' }); return;
      default:
        addItem(current, { kind: 'error', text: `unknown command /${word}; try /me, /msg, /join, /part, /nick, /whois, /topic, /away, /kick, /ban, /mute, /rules, /command, /device` });
    }
  }

  ui.sayForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const line = ui.sayInput.value;
    if (!line.trim()) return;
    if (line.startsWith('//')) say(line.slice(1));
    else if (line.startsWith('/')) command(line);
    else say(line);
    ui.sayInput.value = '';
    focusInput();
  });

  ui.nickForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const nick = ui.nickInput.value.trim();
    if (!nick) { ui.nickError.textContent = 'type a name first'; return; }
    wantedNick = nick;
    ui.nickError.textContent = '';
    const password = ui.passwordInput.value;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      ui.nickError.textContent = 'not connected yet; try again in a moment';
      return;
    }
    if (password) send({ type: 'auth', action: 'login', nick, password, remember: ui.rememberInput.checked }, 'login');
    else send({ type: 'nick', nick }, 'register');
  });

  // Register: take the name as a guest first, then make it ours.
  ui.registerButton.addEventListener('click', () => {
    const nick = ui.nickInput.value.trim();
    const password = ui.passwordInput.value;
    if (!nick || !password) { ui.nickError.textContent = 'type the name and a password (8 characters or more) to register'; return; }
    if (!socket || socket.readyState !== WebSocket.OPEN) { ui.nickError.textContent = 'not connected yet; try again in a moment'; return; }
    wantedNick = nick;
    registerPassword = password;
    ui.nickError.textContent = '';
    send({ type: 'nick', nick }, 'register');
  });

  function logout() {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      // The server must forget the token; forgetting it only here would leave it live.
      addNotice(current, 'not connected: log out again once the page is back online');
      return;
    }
    const token = storedToken();
    storeToken(null);
    account = null;
    wantedNick = '';
    ui.logout.hidden = true;
    // The server forgets the token and closes; the reconnect asks for a name again.
    send(token ? { type: 'auth', action: 'logout', token } : { type: 'auth', action: 'logout' }, 'logout');
  }

  ui.logout.addEventListener('click', logout);

  ui.joinForm.addEventListener('submit', (event) => {
    event.preventDefault();
    joinRoom(ui.joinInput.value);
    ui.joinInput.value = '';
  });

  ui.menu.addEventListener('click', () => {
    const open = document.body.classList.toggle('sidebar-open');
    ui.menu.setAttribute('aria-expanded', String(open));
  });

  // Typing anywhere goes to the message box (unless another field has focus).
  document.addEventListener('keydown', (event) => {
    const active = document.activeElement;
    if (active && (active.tagName === 'INPUT' || active.tagName === 'TEXTAREA')) return;
    if (event.ctrlKey || event.metaKey || event.altKey || event.key.length !== 1) return;
    focusInput();
  });

  connect();
})();
