// The generated messages, with 64-bit integers as JS numbers. Import messages from here, not from
// ./proto/icmpwatch.js directly, so the runtime setting below is in place first.
import './proto-int64.js';

export { icmpwatch, google } from './proto/icmpwatch.js';
