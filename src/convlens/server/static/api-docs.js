// Starts Swagger UI on /docs (api-docs.html) from this file, not an inline script: the page's
// Content-Security-Policy allows scripts from the explorer itself only.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  validatorUrl: null, // the default badge asks a server elsewhere to validate the schema
});
