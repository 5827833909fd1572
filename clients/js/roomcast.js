// roomcast.js: the browser and Node client (being written; see issue 7).
export class Roomcast {}
