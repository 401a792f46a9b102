const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The page a browser without a session gets instead of the dashboard. */
export function renderLoginPage(message?: string): string {
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>nbdmux: log in</title>
  <link rel="stylesheet" href="/style.css">
</head>
<body class="login">
  <header><h1>nbdmux</h1></header>
  <main>
    <form method="post" action="/login" class="login-form">
      <h2>Log in</h2>
      <label>Admin password <input type="password" name="password" autocomplete="current-password" autofocus required></label>
      ${message ? `<p class="form-error" role="alert">${escapeHtml(message)}</p>` : ''}
      <button type="submit">Log in</button>
    </form>
  </main>
</body>
</html>
`;
}
