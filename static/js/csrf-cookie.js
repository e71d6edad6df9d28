/*
 * The CSRF token as its cookie holds it now, for the pages that post from a script (the screenplay
 * editor, the persona editor's live preview): signing in again (in another tab, after a sign-out or an
 * expired session) rotates it, and the token a page was served with would be refused from then on.
 */
window.csrfTokenFromCookie = function (cookieName, served) {
  "use strict";
  var prefix = cookieName + "=";
  var found = document.cookie.split("; ").filter(function (pair) {
    return pair.indexOf(prefix) === 0;
  })[0];
  return found ? decodeURIComponent(found.slice(prefix.length)) : served;
};
