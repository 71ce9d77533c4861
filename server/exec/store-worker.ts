import { serveStore } from './store-thread.js';

// Entry of the execution writer's thread (built to dist/exec-store-worker.js; see store-thread.ts).
serveStore();
