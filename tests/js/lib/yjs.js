// The stock y-socket.io provider in Node tests.

import * as broadcastchannel from "lib0/broadcastchannel";

/**
 * Destroys a stock `SocketIOProvider` so that the process can exit. Two gaps of y-socket.io
 * 1.1.3: `destroy()` disconnects only a connected socket, so one that is reconnecting (its
 * server went away) keeps trying forever; and `disconnect()` posts its awareness to its BroadcastChannel even with `disableBc: true`,
 * which opens the channel (Node's BroadcastChannel keeps the event loop alive) and never
 * closes it; closing it takes a subscribe/unsubscribe pair (lib0 closes a channel when its
 * last subscriber leaves). A page is not affected; a Node process using the provider is.
 */
export function destroyProvider(provider) {
  provider.destroy();
  provider.socket.disconnect(); // also stops a reconnecting Manager
  const none = () => {};
  broadcastchannel.subscribe(provider.broadcastChannel, none);
  broadcastchannel.unsubscribe(provider.broadcastChannel, none);
}
