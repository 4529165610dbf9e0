'use strict';
/**
 * Preloaded into a sidecar (`node bench/cpu.js ... '--node-flags=--require bench/lib/alloc-sample.js'`):
 * V8's sampling heap profiler from start to exit, counting the objects the GC collected too (the
 * default `--heap-prof` keeps only what is still alive, which says nothing about per-request
 * garbage). One sample per 2 KiB allocated (MESHLET_ALLOC_INTERVAL); at exit it writes
 * `alloc-PID.heapprofile` into MESHLET_ALLOC_DIR (default the OS temp dir). Read with
 * bench/alloc-profile.js. MESHLET_ALLOC_MINOR=0 samples only what survived the scavenges.
 */
const inspector = require('node:inspector');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const dir = process.env.MESHLET_ALLOC_DIR || os.tmpdir();
const s = new inspector.Session();
s.connect();
s.post('HeapProfiler.enable');
s.post('HeapProfiler.startSampling', {
  samplingInterval: Number(process.env.MESHLET_ALLOC_INTERVAL || 2048),
  includeObjectsCollectedByMajorGC: true,
  // MESHLET_ALLOC_MINOR=0: leave out what scavenges collected, so the profile holds what survived
  // them (promoted to the old generation, or still alive): where the mark-compacts come from.
  includeObjectsCollectedByMinorGC: process.env.MESHLET_ALLOC_MINOR !== '0',
});
let written = false;
function write() {
  if (written) return;
  written = true;
  // The in-process session answers synchronously: the profile is written before the process ends.
  s.post('HeapProfiler.stopSampling', (err, r) => {
    if (!err) fs.writeFileSync(path.join(dir, `alloc-${process.pid}.heapprofile`), JSON.stringify(r.profile));
  });
}
// On SIGTERM first, before the sidecar's graceful stop (bench/lib/procs.js kills it 2 s later).
process.prependListener('SIGTERM', write);
process.on('exit', write);
