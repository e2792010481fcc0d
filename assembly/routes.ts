// Longest-prefix-match table from an IPv4 destination to a peer (the host owning that subnet).
//
// Routes are kept in one hash table keyed by (network, prefix length). A lookup probes only the
// prefix lengths that are in use, longest first; a flannel cluster uses one or two lengths, so a
// lookup costs a couple of probes however many routes there are. A small direct-mapped cache in
// front of it remembers recent addresses until the next table change.
import { ROUTES, ROUTE_SIZE, MAX_ROUTES, ROUTE_HASH, HASH_SLOTS, R_NET, R_LEN, R_USED, R_PUBLIC_IP, R_MAC } from './ring';

const HASH_BITS: u32 = 18; // log2(HASH_SLOTS)
const CACHE_SLOTS: u32 = 256;

const lenCount = memory.data(33 * 4);   // routes per prefix length
const activeLens = memory.data(33);     // prefix lengths in use, longest first
const cache = memory.data(CACHE_SLOTS * 12); // [addr u32, index i32, generation u32]

let nActiveLens: u32 = 0;
let routeCount: u32 = 0;
let highWater: u32 = 0;
let freeHead: i32 = -1;
let generation: u32 = 1;

@inline export function routeAddr(i: i32): u32 { return ROUTES + <u32>i * ROUTE_SIZE; }
@inline export function maskOf(len: u32): u32 { return len == 0 ? 0 : (0xffffffff << (32 - len)); }
@inline function home(net: u32, len: u32): u32 {
  return ((net ^ (len * 0x9e3779b9)) * 0x85ebca6b) >> (32 - HASH_BITS);
}
@inline function slotAddr(s: u32): u32 { return ROUTE_HASH + (s << 2); }

export function routesReset(): void {
  // The hash holds exactly routeCount non-zero slots (deletion leaves no tombstones), so an
  // empty table is already clear: a fresh instance leaves its 1 MiB of hash pages untouched,
  // out of the process's resident memory.
  if (routeCount != 0) memory.fill(ROUTE_HASH, 0, HASH_SLOTS * 4);
  memory.fill(lenCount, 0, 33 * 4);
  memory.fill(cache, 0, CACHE_SLOTS * 12);
  nActiveLens = 0;
  routeCount = 0;
  highWater = 0;
  freeHead = -1;
  generation = 1;
}

export function routesCount(): u32 { return routeCount; }

function rebuildLens(): void {
  nActiveLens = 0;
  for (let l: i32 = 32; l >= 0; l--) {
    if (load<u32>(lenCount + (<u32>l << 2)) != 0) store<u8>(activeLens + nActiveLens++, <u8>l);
  }
}

function changed(): void {
  generation++;
  if (generation == 0) { memory.fill(cache, 0, CACHE_SLOTS * 12); generation = 1; }
}

// Hash slot holding (net, len), or -1.
function findSlot(net: u32, len: u32): i32 {
  let s = home(net, len);
  for (let probes: u32 = 0; probes < HASH_SLOTS; probes++) {
    let v = load<u32>(slotAddr(s));
    if (v == 0) return -1;
    let r = routeAddr(<i32>v - 1);
    if (load<u32>(r + R_NET) == net && <u32>load<u8>(r + R_LEN) == len) return <i32>s;
    s = (s + 1) & (HASH_SLOTS - 1);
  }
  return -1;
}

export function routeFind(net: u32, len: u32): i32 {
  if (len > 32) return -1;
  let s = findSlot(net & maskOf(len), len);
  return s < 0 ? -1 : <i32>load<u32>(slotAddr(<u32>s)) - 1;
}

// Adds or replaces the route net/len -> peer. Returns the entry index, -1 when the table is
// full, -2 for a bad prefix length.
export function routeSet(net: u32, len: u32, publicIP: u32, macHi: u32, macLo: u32): i32 {
  if (len > 32) return -2;
  net &= maskOf(len);
  let idx = routeFind(net, len);
  if (idx < 0) {
    // Keep the hash at most half full so probe runs stay short.
    if (routeCount >= MAX_ROUTES || routeCount >= HASH_SLOTS / 2) return -1;
    if (freeHead >= 0) {
      idx = freeHead;
      freeHead = <i32>load<u32>(routeAddr(idx) + R_NET);
    } else {
      idx = <i32>highWater;
      highWater++;
    }
    let r = routeAddr(idx);
    memory.fill(r, 0, ROUTE_SIZE);
    store<u32>(r + R_NET, net);
    store<u8>(r + R_LEN, <u8>len);
    store<u8>(r + R_USED, 1);
    let s = home(net, len);
    while (load<u32>(slotAddr(s)) != 0) s = (s + 1) & (HASH_SLOTS - 1);
    store<u32>(slotAddr(s), <u32>idx + 1);
    routeCount++;
    let lc = lenCount + (len << 2);
    store<u32>(lc, load<u32>(lc) + 1);
    if (load<u32>(lc) == 1) rebuildLens();
  }
  let r = routeAddr(idx);
  store<u32>(r + R_PUBLIC_IP, publicIP);
  store<u16>(r + R_MAC, bswap<u16>(<u16>macHi));
  store<u32>(r + R_MAC + 2, bswap<u32>(macLo));
  changed();
  return idx;
}

export function routeRemove(net: u32, len: u32): bool {
  if (len > 32) return false;
  net &= maskOf(len);
  let found = findSlot(net, len);
  if (found < 0) return false;
  let i = <u32>found;
  let idx = <i32>load<u32>(slotAddr(i)) - 1;
  // Backward-shift deletion keeps linear probing correct without tombstones.
  let j = i;
  while (true) {
    j = (j + 1) & (HASH_SLOTS - 1);
    let v = load<u32>(slotAddr(j));
    if (v == 0) break;
    let r = routeAddr(<i32>v - 1);
    let h = home(load<u32>(r + R_NET), <u32>load<u8>(r + R_LEN));
    // Move v into the hole at i unless its home lies cyclically in (i, j].
    let inRange = i <= j ? (h > i && h <= j) : (h > i || h <= j);
    if (!inRange) {
      store<u32>(slotAddr(i), v);
      i = j;
    }
  }
  store<u32>(slotAddr(i), 0);
  let r = routeAddr(idx);
  store<u8>(r + R_USED, 0);
  store<u32>(r + R_NET, <u32>freeHead);
  freeHead = idx;
  routeCount--;
  let lc = lenCount + (len << 2);
  store<u32>(lc, load<u32>(lc) - 1);
  if (load<u32>(lc) == 0) rebuildLens();
  changed();
  return true;
}

// Longest-prefix match: the entry index for addr, or -1.
export function routeLookup(addr: u32): i32 {
  let c = cache + ((((addr * 0x9e3779b1) >> 24) & (CACHE_SLOTS - 1)) * 12);
  if (load<u32>(c + 8) == generation && load<u32>(c) == addr) return load<i32>(c + 4);
  let result: i32 = -1;
  for (let k: u32 = 0; k < nActiveLens; k++) {
    let len = <u32>load<u8>(activeLens + k);
    let net = addr & maskOf(len);
    let s = home(net, len);
    while (true) {
      let v = load<u32>(slotAddr(s));
      if (v == 0) break;
      let r = routeAddr(<i32>v - 1);
      if (load<u32>(r + R_NET) == net && <u32>load<u8>(r + R_LEN) == len) { result = <i32>v - 1; break; }
      s = (s + 1) & (HASH_SLOTS - 1);
    }
    if (result >= 0) break;
  }
  store<u32>(c, addr);
  store<i32>(c + 4, result);
  store<u32>(c + 8, generation);
  return result;
}
