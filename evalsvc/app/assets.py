"""The main page's own CSS and JavaScript, given to `gr.HTML(css_template=..., js_on_load=...)`.

Gradio scopes each CSS block to its component; each script runs once when its component loads, with
`element` (the component), `props` (its value) and `trigger` (send an event to the server).
"""

# Clicks on a grid thumbnail ask the server for that image's details (the `<a>` opens the image without JS).
GRID_JS = """element.addEventListener('click', (event) => {
  const image = event.target.closest('img[data-key]');
  if (!image) return;
  event.preventDefault();
  trigger('click', {key: image.dataset.key});
});"""
GRID_CSS = """table.evs-grid img { cursor: zoom-in; image-rendering: pixelated; }
table.evs-grid th { font-weight: normal; font-size: 12px; padding: 2px 6px; text-align: left; }"""
LIGHTBOX_JS = """const close = () => { props.value = ''; };
element.addEventListener('click', (event) => {
  if (event.target.closest('.evs-close') || event.target.classList.contains('evs-lightbox')) {
    event.preventDefault();
    close();
  }
});
document.addEventListener('keydown', (event) => { if (event.key === 'Escape' && props.value) close(); });"""
LIGHTBOX_CSS = """.evs-lightbox { position: fixed; inset: 0; z-index: 1000; background: rgba(0, 0, 0, 0.6);
  display: flex; align-items: center; justify-content: center; }
.evs-box { position: relative; display: flex; flex-wrap: wrap; gap: 16px; max-width: 95vw; max-height: 92vh;
  overflow: auto; padding: 20px; border-radius: 8px; background: var(--background-fill-primary, white);
  color: var(--body-text-color, black); }
.evs-big img { display: block; width: min(512px, 60vw); height: auto; image-rendering: pixelated; }
.evs-info { width: 400px; max-width: 90vw; font-size: 13px; }
.evs-info h3 { margin: 0 0 8px; }
.evs-info h4 { margin: 12px 0 4px; }
.evs-info table { width: 100%; margin: 0; border-collapse: collapse; table-layout: fixed; }
.evs-info th, .evs-info td { padding: 2px 8px; font-size: 13px; line-height: 1.4; vertical-align: top; }
.evs-info th { width: 130px; text-align: left; white-space: nowrap; }
.evs-info td { overflow-wrap: anywhere; }
.evs-info pre { white-space: pre-wrap; font-size: 12px; margin: 0; }
.evs-close { position: absolute; top: 2px; right: 10px; font-size: 26px; text-decoration: none; }"""
SLIDER_JS = """element.addEventListener('input', (event) => {
  if (!event.target.matches('.evs-split')) return;
  const over = element.querySelector('.evs-over');
  if (over) over.style.clipPath = 'inset(0 0 0 ' + event.target.value + '%)';
});"""
SLIDER_CSS = """.evs-views { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.evs-overlay { position: relative; width: min(400px, 90vw); }
.evs-overlay img { display: block; width: 100%; height: auto; image-rendering: pixelated; }
.evs-over { position: absolute; top: 0; left: 0; clip-path: inset(0 0 0 50%); }
.evs-tag { position: absolute; top: 6px; padding: 0 6px; border-radius: 4px; background: rgba(0, 0, 0, 0.6);
  color: white; font-weight: bold; }
.evs-tag-a { left: 6px; }
.evs-tag-b { right: 6px; }
.evs-split { width: min(400px, 90vw); margin: 6px 0 0; }
.evs-pair { display: flex; flex-wrap: wrap; gap: 16px; }
.evs-pair figure { margin: 0; }
.evs-pair img { width: 256px; height: auto; image-rendering: pixelated; }
.evs-pair figcaption { font-size: 13px; max-width: 256px; }"""
CURVES_CSS = """.evs-curves { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px; }
.evs-curve { margin: 0; }
.evs-forest { margin: 0; max-width: 720px; }
.evs-forest svg { width: 100%; height: auto; }
.evs-curve svg { width: 100%; height: auto; }
.evs-portability { border-collapse: collapse; margin: 0.5em 0; }
.evs-portability th, .evs-portability td { border: 1px solid #ccc; padding: 4px 8px; color: #111; }
.evs-portability td.evs-heat { text-align: center; min-width: 9em; }"""
# The vote page: keys 1/2/3/4 or a/b/t/x press the answer buttons (not while typing in a field).
VOTE_KEYS_JS = """document.addEventListener('keydown', (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.target.closest('input, textarea')) return;
  const answer = {'1': 'A', 'a': 'A', '2': 'B', 'b': 'B', '3': 'tie', 't': 'tie', '4': 'both_bad', 'x': 'both_bad'}
    [event.key.toLowerCase()];
  const button = answer && document.querySelector('#evs-vote-' + answer + ' , button#evs-vote-' + answer);
  if (button && !button.disabled) { event.preventDefault(); button.click(); }
});"""
VOTE_CSS = """.evs-vote-pair { display: flex; flex-wrap: wrap; gap: 12px; justify-content: center; }
.evs-vote-pair figure { margin: 0; width: min(384px, calc(50% - 6px)); }  /* side by side, on a phone too */
.evs-vote-pair img { display: block; width: 100%; height: auto; image-rendering: pixelated; }
.evs-vote-pair figcaption { font-size: 2.4rem; font-weight: bold; text-align: center; line-height: 1.2; }
.evs-reveal { animation: evs-fade 10s forwards; padding: 4px 8px; border-left: 4px solid #888; }
@keyframes evs-fade { 0%, 70% { opacity: 1; } 100% { opacity: 0.35; } }"""
