// The dgram engine (one packet per call through Node's own sockets) carries real traffic too.
import t from 'tap';
import { MB, BIG, pingAndTransfer } from '../helpers/dataplane.js';

for (const mode of ['udp', 'vxlan'] as const) {
  t.test(`${mode} mode, dgram engine: ping and a ${BIG / MB} MB transfer with matching SHA-256`,
    (t) => pingAndTransfer(t, { mode, engine: 'dgram' }));
}
