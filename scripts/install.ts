// npm install hook: fetches the PJRT CPU plugin and builds the native addon (filled in by the runtime work).
console.log("tessera: install step (plugin fetch and addon build) not written yet");
