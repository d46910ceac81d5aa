"""The demo page's static files (index.html, demo.js, demo.css), served at "/" by
server.protocol.demo_endpoints. Plain files, no build step and nothing fetched from
elsewhere, so the page works offline."""
