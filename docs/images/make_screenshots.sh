#!/usr/bin/env bash
# Screenshots of TensorBoard's Scalars, Images and Graphs tabs for one run, for the docs.
#
#   bash docs/images/make_screenshots.sh logs/demo docs/images
#
# writes tensorboard_{scalars,images,graphs}.png into the output folder. Needs tensorboard
# (requirements.txt), python3 and Debian's chromium (apt-get install -y chromium). Serves
# only on 127.0.0.1 (ports $PORT and $PORT + 1, default 6006) and stops what it started.
set -euo pipefail
if [ $# -ne 2 ] || [ ! -d "$1" ]; then
    echo "usage: $0 RUN_DIR OUT_DIR  (RUN_DIR holds train/, val/, baseline/)" >&2
    exit 2
fi
run_dir=$1 out=$2 port=${PORT:-6006}
tb="http://127.0.0.1:$port" tmp=$(mktemp -d) pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait; rm -rf "$tmp"' EXIT
mkdir -p "$out" "$tmp/www"

wait_for() {  # URL: until it answers (at most ~2 minutes)
    for _ in $(seq 240); do curl -sf "$1" >/dev/null && return; sleep 0.5; done
    echo "error: $1 did not answer" >&2
    exit 1
}

shot() {  # NAME URL WIDTH,HEIGHT [chromium flags...]: virtual time lets the page finish
    local name=$1 url=$2 size=$3
    shift 3
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$tmp/profile-$name" --window-size="$size" --hide-scrollbars \
        --virtual-time-budget=90000 --screenshot="$out/tensorboard_$name.png" "$@" "$url" \
        2>"$tmp/chromium-$name.log"
    echo "wrote $out/tensorboard_$name.png"
}

tensorboard --logdir "$run_dir" --host 127.0.0.1 --port "$port" >"$tmp/tensorboard.log" 2>&1 &
pids+=($!)
wait_for "$tb/data/runs"

# All scalar tags in one group, unsmoothed: cost (train, val), learning_rate, and each
# metric with its val and baseline lines in one chart.
shot scalars "$tb/#scalars&tagFilter=%5E(foreground_iou%7Cdice%7Cpixel_accuracy%7Cprecision%7Crecall%7Ccost%7Clearning_rate)%24&_smoothingWeight=0" 1400,1340
shot images "$tb/#images" 1400,760

# The graph tab keeps its zoom and expanded nodes out of the URL: a page of the same
# site frames it and, once laid out, brings unet/ into the main graph, expands it and
# zooms to it (reaching into the frame needs --disable-web-security).
cat >"$tmp/www/graph.html" <<EOF
<!doctype html><body style="margin:0">
<iframe id="tb" src="$tb/#graphs&run=train" style="border:0;position:fixed;inset:0;width:100%;height:100%"></iframe>
<script>
function deep(root, sel) {
  const found = root.querySelector(sel);
  if (found) return found;
  for (const el of root.querySelectorAll("*")) {
    const inner = el.shadowRoot && deep(el.shadowRoot, sel);
    if (inner) return inner;
  }
  return null;
}
const wait = ms => new Promise(done => setTimeout(done, ms));
(async () => {
  let scene = null;
  while (!(scene && scene.renderHierarchy && scene.renderHierarchy.getRenderNodeByName("unet"))) {
    await wait(200);
    scene = deep(document.getElementById("tb").contentDocument, "tf-graph-scene");
  }
  await wait(2000);
  scene.fire("node-toggle-extract", {name: "unet"});
  await wait(2000);
  scene.fire("node-toggle-expand", {name: "unet"});
  await wait(2000);
  // Zoom so that unet/ fills the view, its input and loss at the edges.
  const svg = scene.$.svg.getBoundingClientRect();
  const box = scene.$.root.querySelector('g.node[data-name="unet"]').getBoundingClientRect();
  const [x0, y0, k0] = scene.$.root.getAttribute("transform").match(/[-\d.e]+/g).map(Number);
  const k = k0 * 0.8 * Math.min(svg.width / box.width, svg.height / box.height);
  const cx = (box.left + box.width / 2 - svg.left - x0) / k0;
  const cy = (box.top + box.height / 2 - svg.top - y0) / k0;
  scene.$.root.setAttribute("transform", "translate(" + (svg.width / 2 - k * cx) + ","
                            + (svg.height / 2 - k * cy) + ") scale(" + k + ")");
})();
</script>
EOF
python3 -m http.server "$((port + 1))" --bind 127.0.0.1 --directory "$tmp/www" \
    >"$tmp/http.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$((port + 1))/graph.html"
shot graphs "http://127.0.0.1:$((port + 1))/graph.html" 1400,1000 --disable-web-security
