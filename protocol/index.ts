export * from './common.js';
export * from './errors.js';
export * from './frames.js';
export * from './agent-messages.js';
export * from './console-messages.js';
export * from './update-signing.js';
export * from './policy.js';
export * from './dispatch.js';
