/*
 * A pool whose connections wrap a pg.Client (Slonik) reports its own connection objects as checked out.
 * The recorders that need the wire state (idle in transaction) or query activity of a checkout follow
 * these two links: from the checked-out object to its pg.Client, and back.
 */
const kPgClient = Symbol.for('poolscope.pg-client');
const kCheckedOutAs = Symbol.for('poolscope.checked-out-as');

export function linkCheckout(checkedOut: object, client: object): void {
  hide(checkedOut, kPgClient, client);
  hide(client, kCheckedOutAs, checkedOut);
}

/** The pg.Client behind what a pool checked out: itself for pg-pool, tarn and sequelize-pool. */
export function pgClientOf(checkedOut: object): object {
  return (checkedOut as { [kPgClient]?: object })[kPgClient] ?? checkedOut;
}

/** What the pool reports as checked out for this pg.Client: itself unless linkCheckout() said otherwise. */
export function checkoutOf(client: object): object {
  return (client as { [kCheckedOutAs]?: object })[kCheckedOutAs] ?? client;
}

/** Non-enumerable: the links never show up in console.log, JSON or crash dumps. */
function hide(target: object, key: symbol, value: object): void {
  Object.defineProperty(target, key, { value, writable: true, configurable: true, enumerable: false });
}
