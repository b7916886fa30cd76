// Starts Swagger UI on /docs. A file of its own, not an inline script, so that the page's
// Content-Security-Policy can allow scripts from this origin only.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // The bearer token entered under "Authorize" survives a reload (kept in localStorage).
    persistAuthorization: true,
    displayOperationId: true,
    displayRequestDuration: true,
    // Never send the document to validator.swagger.io: the page talks to this origin only.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
