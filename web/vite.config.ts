import { defineConfig } from "vite";

// No React plugin needed: esbuild compiles TSX with the automatic runtime.
// During `npm run dev`, API and WebSocket calls go to a running `streamstock`.
export default defineConfig({
  esbuild: { jsx: "automatic" },
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: {
    proxy: {
      "/api": "http://127.0.0.1:8000",
      "/ws": { target: "ws://127.0.0.1:8000", ws: true },
    },
  },
});
