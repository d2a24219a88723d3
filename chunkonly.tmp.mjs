import './dist/chunks/chunk-TZW4E43N.js';
