// npm run bench -- [micro|quick|full] [options]
import { runMicro } from './micro.js';

const [what = 'full'] = process.argv.slice(2).filter((a) => !a.startsWith('-'));

switch (what) {
  case 'micro':
    runMicro();
    break;
  default:
    console.error(`bench: "${what}" is not available yet; "micro" is`);
    process.exit(2);
}
