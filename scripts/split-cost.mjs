#!/usr/bin/env node
// Cost of the wasm core's egress split alone: one 64,000-byte TCP TSO super-packet (MSS 1398)
// cut into wire packets with their checksums, per mode, hot cache. docs/performance.md uses it
// to bound what a scatter-gather send could save. Light: no namespaces, no root.
//   npm run build && node scripts/split-cost.mjs
import { Core } from '../dist/src/dataplane/core.js';
const ip = (a, b, c, d) => ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
for (const mode of ['udp', 'vxlan']) {
  const core = new Core({ mode, vnetHdr: true, port: mode === 'udp' ? 8285 : 8472, mtu: 1450, subnet: { ip: ip(10, 5, 72, 0), prefixLen: 24 }, vni: 1, mac: Uint8Array.from([10, 88, 10, 5, 72, 0]) });
  core.setRoute({ subnet: { ip: ip(10, 5, 7, 0), prefixLen: 24 }, publicIP: ip(192, 168, 0, 7), mac: Uint8Array.from([1, 2, 3, 4, 5, 6]) });
  const L = core.layout, dv = new DataView(core.memory.buffer);
  const d = L.EG_IN_DESC, off = dv.getUint32(d, true);
  const total = 64000, mss = 1398;
  const fill = () => {
    dv.setUint8(off, 0); dv.setUint8(off + 1, 1); dv.setUint16(off + 2, 52, true); dv.setUint16(off + 4, mss, true); dv.setUint16(off + 6, 20, true); dv.setUint16(off + 8, 16, true);
    const at = off + 10;
    dv.setUint8(at, 0x45); dv.setUint16(at + 2, total); dv.setUint16(at + 6, 0x4000); dv.setUint8(at + 8, 64); dv.setUint8(at + 9, 6);
    dv.setUint16(at + 10, 0); dv.setUint32(at + 12, ip(10, 5, 72, 5)); dv.setUint32(at + 16, ip(10, 5, 7, 9));
    let sum = 0; for (let i = 0; i < 20; i += 2) sum += dv.getUint16(at + i); while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    dv.setUint16(at + 10, ~sum & 0xffff);
    dv.setUint8(at + 32, 0x80); dv.setUint8(at + 33, 0x10);
    dv.setUint32(d + 4, total + 10, true);
  };
  const N = 20000;
  for (let k = 0; k < 2000; k++) { fill(); core.exports.egress(1, 0); }
  const t0 = process.hrtime.bigint();
  for (let k = 0; k < N; k++) { fill(); core.exports.egress(1, 0); }
  const ns = Number(process.hrtime.bigint() - t0) / N;
  console.log(mode, 'egress of one 64000-byte TSO packet:', (ns / 1000).toFixed(2), 'us; sends', core.exports.sendCount(), '=> at 5 Gbit/s', (ns * 5e9 / 8 / 64000 / 1e9 * 100).toFixed(1), '% of a core');
}
